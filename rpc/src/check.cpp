// checkFields(): every pointer field of a received message read as its schema
// says, so that a message that is almost right is refused by name.
//
// The reference is FieldChecker, which reads through capnp's Dynamic API: it
// is exact, but every field costs several schema-proto reads (getType,
// getProto, DynamicStruct::Reader::get), about 3k instructions for a struct of
// one Text. A CheckPlan compiles a struct's schema once into the pointer reads
// FieldChecker would make, in its order, and runs them with the very layout
// calls DynamicStruct::Reader::get makes (same element sizes, same defaults,
// same bounds and nesting checks), so the first read to throw is the one
// FieldChecker would name, with capnp's same words. The tests and the check
// fuzzer hold the two to the same verdicts and the same words.
#include "check.h"

#include <capnp/dynamic.h>
#include <capnp/layout.h>

#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "zmesh/rpc/frame.h"

namespace zmesh::rpc {

namespace {

// The default a pointer field's get() reads where the pointer is null, as
// dynamic.c++ finds it; nullptr for none. It lives in the schema's own words.
const capnp::word* defaultOf(capnp::StructSchema::Field field) {
  auto value = field.getProto().getSlot().getDefaultValue();
  const capnp::word* words = nullptr;
  switch (value.which()) {
    case capnp::schema::Value::STRUCT:
      words = value.getStruct().getAs<capnp::_::UncheckedMessage>();
      break;
    case capnp::schema::Value::LIST:
      words = value.getList().getAs<capnp::_::UncheckedMessage>();
      break;
    default:
      return nullptr;
  }
  // A null pointer there is no default: layout reads it as none.
  if (words == nullptr || *reinterpret_cast<const uint64_t*>(words) == 0) return nullptr;
  return words;
}

// Walks a message by schema; `path` is the field being read, for the error.
class FieldChecker {
 public:
  explicit FieldChecker(std::string_view root) : path_(root) {}

  void checkStruct(capnp::DynamicStruct::Reader s) {
    auto schema = s.getSchema();
    for (auto field : schema.getNonUnionFields()) checkField(s, field);
    // Only the active member: the others share its storage.
    KJ_IF_MAYBE (active, s.which()) {
      checkField(s, *active);
    }
  }

  // Turns what capnp throws into a FrameError naming where it was reading.
  template <typename Fn>
  void at(std::string_view step, bool index, Fn&& fn) {
    size_t mark = path_.size();
    if (!index) path_ += '.';
    path_ += step;
    try {
      fn();
    } catch (const kj::Exception& e) {
      throw FrameError(path_ + ": " + e.getDescription().cStr());
    }
    path_.resize(mark);
  }

 private:
  static bool isPointer(capnp::schema::Type::Which t) {
    using W = capnp::schema::Type;
    return t == W::TEXT || t == W::DATA || t == W::LIST || t == W::STRUCT;
  }

  void checkField(capnp::DynamicStruct::Reader s, capnp::StructSchema::Field field) {
    auto proto = field.getProto();
    if (proto.isGroup()) {
      at(proto.getName().cStr(), false,
         [&] { checkStruct(s.get(field).as<capnp::DynamicStruct>()); });
      return;
    }
    auto type = field.getType();
    // Data fields are always readable; AnyPointer and capabilities are left to
    // whoever knows what they hold.
    if (!isPointer(type.which())) return;
    // A null struct without a default reads as the empty struct, where
    // nothing can fail; read into, a struct that holds itself never ends.
    if (type.which() == capnp::schema::Type::STRUCT && !s.has(field) && defaultOf(field) == nullptr)
      return;
    at(proto.getName().cStr(), false, [&] { checkValue(s.get(field)); });
  }

  void checkValue(capnp::DynamicValue::Reader v) {
    switch (v.getType()) {
      case capnp::DynamicValue::STRUCT:
        checkStruct(v.as<capnp::DynamicStruct>());
        break;
      case capnp::DynamicValue::LIST:
        checkList(v.as<capnp::DynamicList>());
        break;
      default:  // Text and Data are checked by being read
        break;
    }
  }

  void checkList(capnp::DynamicList::Reader list) {
    // A list of data values was checked whole when it was read.
    if (!isPointer(list.getSchema().whichElementType())) return;
    for (uint i = 0; i < list.size(); ++i) {
      char index[16];
      std::snprintf(index, sizeof(index), "[%u]", i);
      at(index, true, [&] { checkValue(list[i]); });
    }
  }

  std::string path_;
};

}  // namespace

// One struct's pointer fields as the reads FieldChecker makes, in a flat list:
// groups are flattened into their struct (a group shares its parent's
// sections), and a union member's reads carry the discriminants that must
// hold for it to be the active one (a member of a union inside a group inside
// a union carries two).
class CheckPlan {
 public:
  enum class Op : uint8_t {
    kText,
    kData,
    kStruct,  // `plan` for the target
    kList,    // `size` as DynamicStruct reads it; elements per `plan` or `element`
    kFail,    // List(AnyPointer): dynamic reads always throw (the schema compiler refuses
              // one, a schema loaded at run time may have it)
  };
  struct Read {
    Op op = Op::kText;
    capnp::ElementSize size = capnp::ElementSize::VOID;
    const CheckPlan* plan = nullptr;  // kStruct; kList of structs
    const Read* element = nullptr;    // kList of Text, Data or lists (read each element)
    // A field's default (kStruct, kList), as get() passes it: it is read where
    // the pointer is null, nesting checks included.
    const capnp::word* defaultValue = nullptr;
  };
  struct Guard {
    uint32_t offset;  // in 16-bit units, as schema.capnp's discriminantOffset
    uint16_t value;
  };
  struct Step {
    std::string name;  // the path from the struct, "." first: ".pair.more.deep"
    uint32_t pointer;  // index in the pointer section
    uint32_t guardsBegin, guardsEnd;
    Read read;
  };

  bool isGroup = false;  // a group is no root (getAs<DynamicStruct> refuses it)
  std::vector<Guard> guards;
  std::vector<Step> steps;
};

namespace {

using capnp::ElementSize;
using capnp::_::ListReader;
using capnp::_::PointerReader;
using capnp::_::StructReader;
using Which = capnp::schema::Type::Which;

// Every plan ever built, for every thread. Plans refer to each other (a field
// of struct type, a recursive struct to itself) and are never freed: schemas
// compiled into the binary live as long. Built under the lock; read without it
// once built, through each thread's cache.
class PlanStore {
 public:
  const CheckPlan& planFor(capnp::StructSchema schema) {
    std::lock_guard<std::mutex> lock(mutex_);
    return *plan(schema);
  }

 private:
  struct Hash {
    size_t operator()(const capnp::Schema& s) const { return s.hashCode(); }
  };

  // Memoised before its fields are added, so a struct that holds itself (at
  // any depth) finds its own plan, still being filled.
  const CheckPlan* plan(capnp::StructSchema schema) {
    auto& slot = plans_[schema];
    if (slot) return slot.get();
    slot = std::make_unique<CheckPlan>();
    CheckPlan* built = slot.get();
    built->isGroup = schema.getProto().getStruct().getIsGroup();
    std::vector<CheckPlan::Guard> guards;
    addFields(*built, schema, "", guards);
    return built;
  }

  // As FieldChecker::checkStruct: the fields outside any union, then the union's members.
  void addFields(CheckPlan& out, capnp::StructSchema schema, const std::string& path,
                 std::vector<CheckPlan::Guard>& guards) {
    for (auto field : schema.getNonUnionFields()) addField(out, field, path, guards);
    auto node = schema.getProto().getStruct();
    if (node.getDiscriminantCount() == 0) return;
    for (auto field : schema.getUnionFields()) {
      guards.push_back({node.getDiscriminantOffset(), field.getProto().getDiscriminantValue()});
      addField(out, field, path, guards);
      guards.pop_back();
    }
  }

  // As FieldChecker::checkField: groups recursed, data fields, AnyPointer and
  // capabilities skipped (they are not read at all).
  void addField(CheckPlan& out, capnp::StructSchema::Field field, const std::string& path,
                std::vector<CheckPlan::Guard>& guards) {
    auto proto = field.getProto();
    std::string name = path + "." + proto.getName().cStr();
    if (proto.isGroup()) {
      addFields(out, field.getType().asStruct(), name, guards);
      return;
    }
    auto type = field.getType();
    if (!isPointer(type.which())) return;
    CheckPlan::Step step;
    step.name = std::move(name);
    step.pointer = proto.getSlot().getOffset();
    step.guardsBegin = static_cast<uint32_t>(out.guards.size());
    out.guards.insert(out.guards.end(), guards.begin(), guards.end());
    step.guardsEnd = static_cast<uint32_t>(out.guards.size());
    step.read = readFor(type, defaultOf(field));
    out.steps.push_back(std::move(step));
  }

  static bool isPointer(Which t) {
    return t == Which::TEXT || t == Which::DATA || t == Which::LIST || t == Which::STRUCT;
  }

  // dynamic.c++'s elementSizeFor, for the element types it accepts.
  static ElementSize elementSizeFor(Which t) {
    switch (t) {
      case Which::VOID:
        return ElementSize::VOID;
      case Which::BOOL:
        return ElementSize::BIT;
      case Which::INT8:
      case Which::UINT8:
        return ElementSize::BYTE;
      case Which::INT16:
      case Which::UINT16:
      case Which::ENUM:
        return ElementSize::TWO_BYTES;
      case Which::INT32:
      case Which::UINT32:
      case Which::FLOAT32:
        return ElementSize::FOUR_BYTES;
      case Which::INT64:
      case Which::UINT64:
      case Which::FLOAT64:
        return ElementSize::EIGHT_BYTES;
      case Which::TEXT:
      case Which::DATA:
      case Which::LIST:
      case Which::INTERFACE:
        return ElementSize::POINTER;
      case Which::STRUCT:
        return ElementSize::INLINE_COMPOSITE;
      case Which::ANY_POINTER:
        break;
    }
    return ElementSize::VOID;  // an unknown type: zero-size, as capnp treats it
  }

  // What reading a value of `type` (a pointer type) takes.
  CheckPlan::Read readFor(capnp::Type type, const capnp::word* defaultValue = nullptr) {
    CheckPlan::Read read;
    switch (type.which()) {
      case Which::TEXT:
        read.op = CheckPlan::Op::kText;
        break;
      case Which::DATA:
        read.op = CheckPlan::Op::kData;
        break;
      case Which::STRUCT:
        read.op = CheckPlan::Op::kStruct;
        read.plan = plan(type.asStruct());
        read.defaultValue = defaultValue;
        break;
      case Which::LIST: {
        auto element = type.asList().getElementType();
        if (element.which() == Which::ANY_POINTER) {
          read.op = CheckPlan::Op::kFail;
          break;
        }
        read.op = CheckPlan::Op::kList;
        read.size = elementSizeFor(element.which());
        read.defaultValue = defaultValue;
        // FieldChecker::checkList reads the elements of pointer type only.
        if (element.which() == Which::STRUCT) {
          read.plan = plan(element.asStruct());
        } else if (isPointer(element.which())) {
          reads_.push_back(readFor(element));
          read.element = &reads_.back();
        }
        break;
      }
      default:
        break;  // not reached: addField and readFor pass pointer types only
    }
    return read;
  }

  std::mutex mutex_;
  std::unordered_map<capnp::Schema, std::unique_ptr<CheckPlan>, Hash> plans_;
  std::deque<CheckPlan::Read> reads_;  // element reads: a deque keeps their addresses
};

PlanStore& store() {
  static PlanStore* plans = new PlanStore;  // never destroyed: threads may outlive statics
  return *plans;
}

// The plan's reads, each the call DynamicStruct::Reader::get (or
// DynamicList::Reader::operator[]) makes for that type; they throw
// kj::Exception where the dynamic read would.
void run(const CheckPlan& plan, const StructReader& s);

// A refusal on its way out, gaining a step of the path at each level: the
// plan reads in FieldChecker's order, so the first read to fail is the one
// FieldChecker names, and the words are capnp's, as FieldChecker's are.
// (Running FieldChecker again for them would read the message a second time,
// against a traversal budget the plan already spent: a list of zero-size
// elements charges its length on each read, and the second read could run
// out where the first did not.)
struct Refusal {
  std::string path;
  std::string description;
};

// Runs `read` as step `step` (".name" or "[i]") of the path.
template <typename Fn>
void step(const char* name, size_t index, Fn&& fn) {
  auto label = [&] {
    if (name != nullptr) return std::string(name);
    char text[16];
    std::snprintf(text, sizeof(text), "[%zu]", index);
    return std::string(text);
  };
  try {
    fn();
  } catch (Refusal& r) {
    r.path.insert(0, label());
    throw;
  } catch (const kj::Exception& e) {
    throw Refusal{label(), e.getDescription().cStr()};
  }
}

void run(const CheckPlan::Read& read, const PointerReader& pointer) {
  switch (read.op) {
    case CheckPlan::Op::kText:
      (void)capnp::AnyPointer::Reader(pointer).getAs<capnp::Text>();
      return;
    case CheckPlan::Op::kData:
      (void)capnp::AnyPointer::Reader(pointer).getAs<capnp::Data>();
      return;
    case CheckPlan::Op::kStruct:
      // As FieldChecker: a null struct without a default is not read into.
      if (read.defaultValue == nullptr && pointer.isNull()) return;
      run(*read.plan, pointer.getStruct(read.defaultValue));
      return;
    case CheckPlan::Op::kFail:
      KJ_FAIL_ASSERT("List(AnyPointer) not supported.");
    case CheckPlan::Op::kList:
      break;
  }
  ListReader list = pointer.getList(read.size, read.defaultValue);
  auto size = list.size();
  if (read.plan) {
    // Each element is a struct; one with nothing to read still goes through
    // getStructElement, whose nesting check applies to all elements alike.
    if (read.plan->steps.empty()) {
      if (size > 0) step(nullptr, 0, [&] { (void)list.getStructElement(0 * capnp::ELEMENTS); });
      return;
    }
    for (decltype(size) i = 0; i < size; ++i)
      step(nullptr, i,
           [&] { run(*read.plan, list.getStructElement(capnp::bounded(i) * capnp::ELEMENTS)); });
  } else if (read.element) {
    for (decltype(size) i = 0; i < size; ++i)
      step(nullptr, i, [&] {
        run(*read.element, list.getPointerElement(capnp::bounded(i) * capnp::ELEMENTS));
      });
  }
}

void run(const CheckPlan& plan, const StructReader& s) {
  const CheckPlan::Guard* guards = plan.guards.data();
  for (const auto& field : plan.steps) {
    bool active = true;
    for (uint32_t g = field.guardsBegin; g < field.guardsEnd && active; ++g)
      active =
          s.getDataField<uint16_t>(capnp::assumeDataOffset(guards[g].offset)) == guards[g].value;
    // A pointer past the struct's section reads as null (its default), as in get().
    if (active)
      step(field.name.c_str(), 0,
           [&] { run(field.read, s.getPointerField(capnp::assumePointerOffset(field.pointer))); });
  }
}

// The plan for `schema`, found without a lock once this thread has used it:
// a direct-mapped slot first (a handful of instructions), then the thread's
// map (two hot schemas may share a slot), then the store.
const CheckPlan& cachedPlan(capnp::StructSchema schema) {
  struct Slot {
    capnp::Schema schema;
    const CheckPlan* plan = nullptr;
  };
  struct Hash {
    size_t operator()(const capnp::Schema& s) const { return s.hashCode(); }
  };
  thread_local Slot slots[64];
  thread_local std::unordered_map<capnp::Schema, const CheckPlan*, Hash> seen;
  Slot& slot = slots[schema.hashCode() % 64];
  if (slot.plan != nullptr && slot.schema == schema) return *slot.plan;
  auto it = seen.find(schema);
  const CheckPlan* plan =
      it != seen.end() ? it->second : seen.emplace(schema, &store().planFor(schema)).first->second;
  slot = {schema, plan};
  return *plan;
}

// Runs `plan` (not a group's) on `root`; on a refusal, the path and what
// capnp said go to `why`: "[1].name: Message contains ...".
bool runPlan(capnp::AnyPointer::Reader root, const CheckPlan& plan, std::string* why = nullptr) {
  try {
    run(plan,
        capnp::_::PointerHelpers<capnp::AnyPointer>::getInternalReader(root).getStruct(nullptr));
    return true;
  } catch (const Refusal& r) {
    if (why) *why = r.path + ": " + r.description;
  } catch (const kj::Exception& e) {
    if (why) *why = std::string(": ") + e.getDescription().cStr();
  }
  return false;
}

}  // namespace

void checkFieldsDynamic(capnp::AnyPointer::Reader root, capnp::StructSchema schema,
                        std::string_view what) {
  FieldChecker checker(what);
  checker.at("", true, [&] { checker.checkStruct(root.getAs<capnp::DynamicStruct>(schema)); });
}

bool checkFieldsFast(capnp::AnyPointer::Reader root, capnp::StructSchema schema) {
  auto& plan = cachedPlan(schema);
  return !plan.isGroup && runPlan(root, plan);
}

const CheckPlan& checkPlanFor(capnp::StructSchema schema) { return store().planFor(schema); }

void checkFields(capnp::AnyPointer::Reader root, const CheckPlan& plan, capnp::StructSchema schema,
                 std::string_view what) {
  if (plan.isGroup) {
    // No root can be a group: the Dynamic API words that refusal.
    checkFieldsDynamic(root, schema, what);
    throw FrameError(std::string(what) + ": a group is not a struct");
  }
  std::string why;
  if (!runPlan(root, plan, &why)) throw FrameError(std::string(what) + why);
}

void checkFields(capnp::AnyPointer::Reader root, capnp::StructSchema schema,
                 std::string_view what) {
  checkFields(root, cachedPlan(schema), schema, what);
}

}  // namespace zmesh::rpc
