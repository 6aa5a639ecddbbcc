#!/usr/bin/env python3
"""Checks that an OpenAPI document and a route table describe the same routes.

    check_routes.py OPENAPI_JSON ROUTES_FILE

ROUTES_FILE has one route a line, "METHOD /path/{param}" (the form
`zmesh-gateway --print-routes` prints); blank lines and lines starting with
'#' are skipped. Fails (exit 1, one line per difference) when a route of the
file is not an operation of the document, when the document has an operation
the file lacks, when an operation has no operationId or no responses, or when
two operations share an operationId. Exit 2 for unreadable input.
"""

import json
import re
import sys

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_LINE = re.compile(r"^([A-Za-z]+)\s+(/\S*)$")
PARAM = re.compile(r"\{[^}/]*\}")


def shape(path):
    """The path with parameter names dropped: /v1/locks/{name} -> /v1/locks/{}."""
    return PARAM.sub("{}", path)


def load_routes(file_name, problems):
    routes = {}
    with open(file_name, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = ROUTE_LINE.match(line)
            if not m or m.group(1).lower() not in METHODS:
                problems.append(f"{file_name}:{number}: not a route line "
                                f"(expected 'METHOD /path'): {line!r}")
                continue
            route = (m.group(1).upper(), m.group(2))
            if route in routes:
                problems.append(f"{file_name}:{number}: {route[0]} {route[1]} listed twice "
                                f"(first on line {routes[route]})")
                continue
            routes[route] = number
    return routes


def load_operations(file_name, problems):
    with open(file_name, encoding="utf-8") as f:
        doc = json.load(f)
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        problems.append(f"{file_name}: no paths")
        return {}
    operations = {}
    operation_ids = {}
    for path, item in paths.items():
        if not isinstance(item, dict):
            problems.append(f"{file_name}: paths[{path!r}] is not an object")
            continue
        if "$ref" in item:
            problems.append(f"{file_name}: paths[{path!r}] is a $ref, which this check "
                            f"does not follow: write the operations inline")
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            route = (method.upper(), path)
            operations[route] = operation
            name = f"{route[0]} {path}"
            if not isinstance(operation, dict):
                problems.append(f"{name}: the operation is not an object")
                continue
            operation_id = operation.get("operationId")
            if not isinstance(operation_id, str) or not operation_id:
                problems.append(f"{name}: no operationId")
            elif operation_id in operation_ids:
                problems.append(f"{name}: operationId {operation_id!r} also used by "
                                f"{operation_ids[operation_id]}")
            else:
                operation_ids[operation_id] = name
            responses = operation.get("responses")
            if not isinstance(responses, dict) or not responses:
                problems.append(f"{name}: no responses")
    return operations


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} OPENAPI_JSON ROUTES_FILE", file=sys.stderr)
        return 2
    doc_file, routes_file = argv[1], argv[2]
    problems = []
    try:
        operations = load_operations(doc_file, problems)
        routes = load_routes(routes_file, problems)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"check_routes: {e}", file=sys.stderr)
        return 2
    if not routes:
        problems.append(f"{routes_file}: no routes")

    # Same method and path shape, different parameter names: say so, it is
    # the likely cause of the two differences reported for it.
    doc_by_shape = {(m, shape(p)): p for m, p in operations}
    file_by_shape = {(m, shape(p)): p for m, p in routes}

    for method, path in sorted(routes, key=lambda r: (r[1], r[0])):
        if (method, path) in operations:
            continue
        hint = doc_by_shape.get((method, shape(path)))
        extra = f" (the document has {method} {hint}: parameter names differ)" if hint else ""
        problems.append(f"missing from {doc_file}: {method} {path} "
                        f"({routes_file}:{routes[(method, path)]}){extra}")
    for method, path in sorted(operations, key=lambda r: (r[1], r[0])):
        if (method, path) in routes:
            continue
        hint = file_by_shape.get((method, shape(path)))
        extra = f" ({routes_file} has {method} {hint}: parameter names differ)" if hint else ""
        problems.append(f"missing from {routes_file}: {method} {path} "
                        f"(an operation of {doc_file}){extra}")

    for problem in problems:
        print(problem)
    if problems:
        print(f"check_routes: {len(problems)} problem(s)")
        return 1
    print(f"check_routes: {len(routes)} routes of {routes_file} match {doc_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
