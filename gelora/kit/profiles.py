"""The pipeline's profiles: small YAML files (gelora/profiles/*.yaml, or your own), read
strictly (a repeated key is an error), and the `parameters` cell each notebook declares, against
which every profile value and `-p name=value` override is checked before anything runs."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
TYPE_CHECKS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key repeated in one mapping (PyYAML keeps the last one
    without a word: a second `04_fine_tuning:` section would silently replace the first) and every
    alias (`*name`): a profile has no use for them, and a kilobyte of nested aliases expands to
    billions of values when the plan is printed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a profile "
                                              "(write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "profile"):
    """A YAML file read strictly (no repeated keys, no aliases), its errors naming the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:  # a file stream: YAML's errors then name it with the line
            return yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text: {error}") from None


def load_profile(name_or_path: str) -> dict:
    """A profile by name (smoke, cpu, gpu) or by the path of a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name_or_path!r}: not one of {available_profiles()} nor a YAML file")
    profile = read_yaml(path)
    profile = {} if profile is None else profile
    if not isinstance(profile, dict):
        raise ValueError(f"profile {path} must be a mapping with common / notebooks sections, got {type(profile).__name__}")
    for section in ("common", "notebooks"):
        if profile.get(section) is not None and not isinstance(profile[section], dict):
            raise ValueError(f"profile {path}: section {section!r} must be a mapping")
        profile[section] = profile.get(section) or {}
    unknown = sorted(set(profile) - {"description", "common", "notebooks", "skip", "columns"})
    if unknown:
        raise ValueError(f"profile {path} has unknown section(s) {unknown}; expected common, notebooks, skip, "
                         "columns, description")
    columns = profile.setdefault("columns", {}) or {}
    if not isinstance(columns, dict) or set(columns) - {"text", "label"} or not all(
            isinstance(v, str) and v for v in columns.values()):
        raise ValueError(f"profile {path}: columns must map text and/or label to column names, got {columns!r}")
    profile["columns"] = columns
    skip = profile.setdefault("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ValueError(f"profile {path}: skip must be a list of notebook names, got {skip!r}")
    for section in profile["notebooks"].values():
        if section is not None and not isinstance(section, dict):
            raise ValueError(f"profile {path}: every notebooks.<name> section must be a mapping")
    return profile


def declared_parameters(path: Path) -> dict[str, dict]:
    """Names, inferred types and defaults of a notebook's `parameters` cell."""
    import nbformat
    import papermill

    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    book = nbformat.read(str(path), as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=", cell.source, flags=re.M)
    unparsed = [name for name in assigned if name not in params]
    if unparsed:  # papermill skips lines it cannot parse (an `int | None` annotation, say) without a word
        raise ValueError(f"{path.name}: papermill cannot parse parameter(s) {unparsed}; "
                         "annotate them as plain types or strings such as \"Optional[int]\"")
    return params


def parse_override(text: str) -> tuple[str | None, str, object]:
    """`name=value` or `notebook.name=value` (notebook: full stem or its number); the value is
    read as YAML, so 3, 0.5, true, [1, 2] and null have their types."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not name=value")
    key, _, raw = text.partition("=")
    notebook, _, name = key.rpartition(".")
    if not raw.strip():
        raise ValueError(f"override {text!r} has no value: write {key}=null for None, {key}='' for an empty string")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return notebook or None, name.strip(), value


def check_type(notebook: str, name: str, value, declared: dict) -> None:
    kind = (declared.get("inferred_type_name") or "None").split("[")[0].strip().lower()
    if value is None or kind in ("none", "") or "|" in declared.get("inferred_type_name", ""):
        return
    if "optional" in kind or kind == "any":
        return
    allowed = TYPE_CHECKS.get(kind)
    if allowed and (not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool))):
        raise ValueError(f"{notebook}: parameter {name!r} must be {kind}, got {value!r} ({type(value).__name__})")


def literal_value(text):
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return None
