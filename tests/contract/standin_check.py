"""Run in the real sglang-kt 0.7.2 venv by test_standin_contract.py: reads {"routes": [[method, path]...],
"bodies": [[model_name, doc]...]} on stdin; prints {"missing_routes": [...], "invalid": [[model, error]...],
"real_routes": n}. Routes are read from http_server.py's source with ast (the venv holds sglang-kt without the
server's own dependencies, so the app itself cannot be imported); bodies are validated with protocol.py's real
pydantic models."""
import ast
import importlib.util
import json
import sys
from pathlib import Path

from sglang.srt.entrypoints.openai import protocol


def real_routes() -> set:
    spec = importlib.util.find_spec("sglang.srt.entrypoints.http_server")
    tree = ast.parse(Path(spec.origin).read_text())
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                    and isinstance(dec.func.value, ast.Name) and dec.func.value.id == "app" and dec.args):
                continue
            arg = dec.args[0]
            if isinstance(arg, ast.Call) and len(arg.args) == 2:  # os.environ.get("NAME", "/default")
                arg = arg.args[1]
            if not isinstance(arg, ast.Constant):
                continue
            kind = dec.func.attr
            if kind == "api_route":
                methods = next((ast.literal_eval(k.value) for k in dec.keywords if k.arg == "methods"), ["GET"])
            else:
                methods = [kind.upper()]
            out |= {(m, arg.value) for m in methods}
    return out


doc = json.load(sys.stdin)
routes = real_routes()
missing = [r for r in doc["routes"] if tuple(r) not in routes]
invalid = []
for name, body in doc["bodies"]:
    try:
        getattr(protocol, name).model_validate(body)
    except Exception as e:  # pydantic.ValidationError, or a model name protocol.py lacks
        invalid.append([name, str(e)[:2000]])
json.dump({"missing_routes": missing, "invalid": invalid, "real_routes": len(routes)}, sys.stdout)
