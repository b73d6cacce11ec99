"""KServe's field lists, read from the pinned kserve wheel (tools/kserve-schema.txt)
without installing it: each generated model class in kserve/models/ carries
`openapi_types` (field -> type) and `attribute_map` (field -> JSON key), the
same lists KServe's CRDs are generated from. Parsed with `ast`, so none of
the package's server dependencies are needed."""

import ast
import pathlib
import zipfile


def _literal_dict(node):
    return ast.literal_eval(node) if isinstance(node, ast.Dict) else None


def load(wheel: pathlib.Path) -> dict:
    """Returns {class name: {json key: type string}} for every kserve model."""
    models = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not (name.startswith("kserve/models/") and name.endswith(".py")):
                continue
            tree = ast.parse(archive.read(name))
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                fields = {}
                for stmt in cls.body:
                    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                        target = getattr(stmt.targets[0], "id", None)
                        if target in ("openapi_types", "attribute_map"):
                            fields[target] = _literal_dict(stmt.value)
                if fields.get("openapi_types") is not None:
                    types, keys = fields["openapi_types"], fields["attribute_map"]
                    models[cls.name] = {keys[f]: t for f, t in types.items()}
    if not models:
        raise RuntimeError(f"no kserve model classes in {wheel}")
    return models
