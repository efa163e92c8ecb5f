"""Every name pyproc.pyi declares exists in the worker's pyproc module, with
the same kind (class and its base, async def, or the value's type).

Usage: stub_check.py STUB KINDS_JSON, where KINDS_JSON is what
tests/py/e2e/cli.py's module_names() answered in a real worker.
"""

import ast
import json
import sys


def declared(stub_path):
    tree = ast.parse(open(stub_path).read(), stub_path)
    kinds = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            kinds[node.name] = "class " + (ast.unparse(node.bases[0]) if node.bases else "object")
        elif isinstance(node, ast.AsyncFunctionDef):
            kinds[node.name] = "async def"
        elif isinstance(node, ast.FunctionDef):
            kinds[node.name] = "function"
        elif isinstance(node, ast.AnnAssign):
            kinds[node.target.id] = ast.unparse(node.annotation)
    return kinds


def main():
    stub, actual = declared(sys.argv[1]), json.loads(sys.argv[2])
    bad = [f"{name}: stub says {kind}, worker has {actual.get(name, 'nothing')}"
           for name, kind in stub.items() if actual.get(name) != kind]
    for line in bad:
        print("stub mismatch:", line)
    print(f"pyproc.pyi: {len(stub)} names, {len(bad)} mismatched")
    sys.exit(1 if bad or not stub else 0)


main()
