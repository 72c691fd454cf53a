"""config/README.md, generated from the config schema so that the key reference cannot
drift from what the workflow validates.

    python -m sparse_soups.schema_docs > config/README.md
    python -m sparse_soups.schema_docs --out config/README.md
    python -m sparse_soups.schema_docs --check    # exit 1 if config/README.md is stale

Every key of `workflow/schemas/config.schema.yaml` gets a row: its type, its default
(the schema's, else the dataclass default of src/sparse_soups/config.py that a missing
experiment key takes), the values it allows (enums, registry names, ranges) and its
`description`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import Settings
from .validation import load_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"
COMMAND = "python -m sparse_soups.schema_docs --out config/README.md"
EXPERIMENT = "experiments.<name>"

INTRO = """\
# Configuring the workflow

A config file names one or more **experiments** under `experiments:`; each is a full
study (pretraining, the IMP phases, the soups, the baselines, evaluation and report) for
its `seeds`, written to `results/<name>/`. A key an experiment leaves out takes the
default listed below, so a config only states what differs.

Which config runs:

- **The embedded default**, `config/config.yaml`: `snakemake --cores 8` runs it.
- **Another config of this directory** (the paper's settings, the smoke test):
  `snakemake --cores 8 --configfile config/<file>.yaml`. A `--configfile` replaces the
  embedded default rather than merging into it; several are merged in order, so a small
  file can override single values of another.
- **A deployed copy** (`snakedeploy deploy-workflow`; the top-level README, "Deploying
  and using the workflow as a module"): edit the deployed `config/config.yaml`, or copy
  one of the other files over it.
- **Single values**: `snakemake --cores 8 --config 'experiments={fmnist_cnn: {seeds: [0]}}'`.

The workflow checks the whole config before it plans a job and names every bad key at
once (unknown keys, wrong types, values out of range, names no registry holds).
"""

REFERENCE = f"""## Key reference

Generated from `workflow/schemas/config.schema.yaml` (its `description`s), the registries'
names and the defaults in `src/sparse_soups/config.py` by `{COMMAND}`; edit those, not
this file. `<name>` stands for an experiment's name.
"""


def resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The node with a local `$ref` replaced by its definition (the node's own keys win)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**resolve(target, schema), **{k: v for k, v in node.items() if k != "$ref"}}


def fmt_value(value: Any) -> str:
    """A value as YAML flow style writes it: null, true, [a, b], {}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def fmt_type(node: dict[str, Any]) -> str:
    """`integer or null`, `list of string`: the JSON types, as a reader of YAML says them."""
    types = node.get("type", "object")
    types = types if isinstance(types, list) else [types]
    if "array" in types:
        item = node.get("items", {}).get("type", "any")
        item = " or ".join(item) if isinstance(item, list) else item
        types = [f"list of {item}" if t == "array" else t for t in types]
    return " or ".join(types)


def fmt_allowed(node: dict[str, Any]) -> str:
    """Enums (of the key, or of a list's items) and numeric bounds, in interval notation."""
    items = node.get("items", {})
    enum = node.get("enum") or items.get("enum")
    parts = [", ".join(f"`{fmt_value(v)}`" for v in enum)] if enum else []
    bounded = (
        node
        if any(k in node for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"))
        else items
    )
    low, high = (
        bounded.get("minimum", bounded.get("exclusiveMinimum")),
        bounded.get("maximum", bounded.get("exclusiveMaximum")),
    )
    if low is not None or high is not None:
        left = "(" if "exclusiveMinimum" in bounded or low is None else "["
        right = ")" if "exclusiveMaximum" in bounded or high is None else "]"
        low_text = "-inf" if low is None else fmt_value(low)
        high_text = "inf" if high is None else fmt_value(high)
        parts.append(f"{left}{low_text}, {high_text}{right}")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    if node.get("minItems"):
        parts.append(f"at least {node['minItems']}")
    return "; ".join(parts)


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def dataclass_defaults() -> dict[str, Any]:
    """Each experiment key's default, by its path under `experiments.<name>`."""
    flat: dict[str, Any] = {}
    for section, value in Settings().to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{EXPERIMENT}.{section}.{key}": v for key, v in value.items()})
        else:
            flat[f"{EXPERIMENT}.{section}"] = value
    return flat


def shared_refs(node: dict[str, Any]) -> dict[str, list[str]]:
    """Keys of `node` that share one `$ref` with other keys (resources' kinds of job)."""
    keys: dict[str, list[str]] = {}
    for key, child in node.get("properties", {}).items():
        if "$ref" in child:
            keys.setdefault(child["$ref"], []).append(key)
    return {ref: names for ref, names in keys.items() if len(names) > 1}


def child_path(path: str, key: str, node: dict[str, Any]) -> str:
    """The section path of a key: keys that share a definition share one, `<key>`."""
    child = node["properties"][key]
    shared = "$ref" in child and child["$ref"] in shared_refs(node)
    key = "<key>" if shared else key
    return f"{path}.{key}" if path else key


def sections(
    node: dict[str, Any], path: str, schema: dict[str, Any], note: str = ""
) -> Iterator[tuple[str, dict, str]]:
    """(path, object node, note) of every object with keys, depth first, parents first;
    keys that share a definition get one section, whose note names them."""
    node = resolve(node, schema)
    if node.get("properties"):
        yield path, node, note
        groups = shared_refs(node)
        seen = set()
        for key, child in node["properties"].items():
            sub = child_path(path, key, node)
            if sub in seen:
                continue
            seen.add(sub)
            names = groups.get(child.get("$ref"), [])
            sub_note = f"The keys of each of {', '.join(f'`{path}.{k}`' for k in names)}." if names else ""
            yield from sections(child, sub, schema, sub_note)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from sections(extra, f"{path}.<name>", schema)


def rows(node: dict[str, Any], path: str, schema: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """One table row per key: type, default (the schema's, else the dataclass's), allowed
    values, description and a link to the key's own section."""
    out = []
    for key, child in node["properties"].items():
        child = resolve(child, schema)
        full = f"{path}.{key}" if path else key
        if "default" in child and child.get("type") != "object":
            default = fmt_value(child["default"])
        else:
            default = fmt_value(defaults[full]) if full in defaults else ""
        default = f"`{default}`" if default else ""
        nested = child.get("properties") or isinstance(child.get("additionalProperties"), dict)
        target = child_path(path, key, node) + (".<name>" if "properties" not in child else "")
        where = f"(keys: [below](#{anchor(target)}))" if nested else ""
        description = " ".join(filter(None, [cell(child.get("description", "")), where]))
        out.append(
            f"| `{key}` | {fmt_type(child)} | {default} | {cell(fmt_allowed(child))} | {description} |"
        )
    return out


def anchor(path: str) -> str:
    """GitHub's heading anchor for a section heading that is just `path`."""
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def section_text(
    path: str, node: dict[str, Any], note: str, schema: dict[str, Any], defaults: dict[str, Any]
) -> str:
    """A heading `path`, the object's description, and its table of keys."""
    head = [f"### `{path}`" if path else "### Top level", ""]
    if path and node.get("description"):
        head += [" ".join(node["description"].split()), ""]
    if note:
        head += [note, ""]
    table = ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    return "\n".join(head + table + rows(node, path, schema, defaults)) + "\n"


def first_sentence(path: Path) -> str:
    """The first sentence of a config file's leading comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def config_table(config_dir: Path) -> str:
    rows = [
        f"| `config/{path.name}` | {cell(first_sentence(path))} |"
        for path in sorted(config_dir.glob("*.yaml"))
    ]
    return (
        "\n".join(["The configs of this directory:", "", "| file | what it runs |", "| --- | --- |", *rows])
        + "\n"
    )


def render(schema_path: Path = SCHEMA, config_dir: Path = README.parent) -> str:
    """The whole of config/README.md: the intro, the configs of config/, then one table per
    section of the schema."""
    schema = load_schema(schema_path)
    defaults = dataclass_defaults()
    parts = [
        INTRO,
        config_table(config_dir),
        REFERENCE,
        " ".join(schema.get("description", "").split()) + "\n",
    ]
    parts += [section_text(*section, schema, defaults) for section in sections(schema, "", schema)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparse_soups.schema_docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="the config schema (YAML)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--out", type=Path, help="write the README here instead of to stdout")
    action.add_argument("--check", type=Path, nargs="?", const=README, help="compare with this file")
    args = parser.parse_args(argv)
    text = render(args.schema)
    if args.check:
        if args.check.exists() and args.check.read_text() == text:
            return 0
        print(
            f"{args.check} is out of date with the config schema; regenerate it with: {COMMAND}",
            file=sys.stderr,
        )
        return 1
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
