// Takes 100 ids and watches the event they cause: the shape of API.md's C++ example.
//   zmesh-consumer [mesh.toml] [namespace]
#include <zmesh/client.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
  const char* config = argc > 1 ? argv[1] : "deploy/local/mesh.toml";
  std::string ns = argc > 2 ? argv[2] : "orders";
  try {
    zmesh::Mesh mesh{config};
    std::atomic<int> blocks{0};
    auto subscription = mesh.events().subscribe("idgen.", [&](const zmesh::Event& e) {
      std::cout << "event " << e.topic << " " << e.json << std::endl;
      ++blocks;
    });
    std::this_thread::sleep_for(
        std::chrono::milliseconds(300));  // let the subscription reach the broker

    auto ids = mesh.idgen().next(ns, 100);  // [first, first + 100)
    std::cout << "ids " << ids.first << ".." << ids.first + ids.count - 1 << std::endl;

    for (int i = 0; i < 50 && blocks == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (blocks == 0) {
      std::cerr << "no idgen event arrived" << std::endl;
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "zmesh-consumer: " << e.what() << std::endl;
    return 1;
  }
}
