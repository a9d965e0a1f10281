"""YAML as DVC reads it: the same values as DVC's own loader, and errors that say where."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from dvc.utils.serialize import load_yaml as dvc_load_yaml

from pipeline.core import yamlio
from pipeline.core.errors import ParamsError
from pipeline.core.yamlio import load_yaml, loads_yaml

# Scalars that YAML 1.1 (PyYAML) and YAML 1.2 (ruamel.yaml, DVC) read differently, or that look
# like they might; the expected value is what DVC 3.x reads (checked with dvc.api.params_show).
TRICKY = {
    "exponent": ("1e-3", 0.001),
    "upper_exponent": ("1E3", 1000.0),
    "yes": ("yes", "yes"),
    "no": ("no", "no"),
    "on": ("on", "on"),
    "octal": ("0o17", 15),
    "underscores": ("1_000", 1000),
    "lowercase_true": ("true", True),
    "tilde": ("~", None),
    "quoted_exponent": ("'1e-3'", "1e-3"),
}


@pytest.fixture
def tricky_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("".join(f"{key}: {text}\n" for key, (text, _) in TRICKY.items()))
    return path


def test_tricky_scalars_read_as_dvc_reads_them(tricky_file):
    ours = load_yaml(tricky_file)
    assert ours == dvc_load_yaml(tricky_file)
    for key, (_, expected) in TRICKY.items():
        assert ours[key] == expected, key
        assert type(ours[key]) is type(expected), key


def test_repository_params_yaml_read_as_dvc_reads_it(project_root):
    path = project_root / "params.yaml"
    assert load_yaml(path) == dvc_load_yaml(path)


def test_anchors_and_merge_keys():
    text = (
        "sets:\n"
        "  a: &a {x: {lr: 1e-2}}\n"
        "  b: &b {y: {lr: 1}, x: {lr: 5}}\n"
        "merged:\n"
        "  <<: [*a, *b]\n"
        "  z: {lr: .5}\n"
    )
    merged = loads_yaml(text)["merged"]
    assert merged == {"x": {"lr": 0.01}, "y": {"lr": 1}, "z": {"lr": 0.5}}  # first set wins
    assert type(merged) is dict


def test_special_floats_and_empty_document():
    assert math.isinf(loads_yaml("a: .inf")["a"])
    assert loads_yaml("") is None
    assert loads_yaml("# only a comment\n") is None


def test_duplicate_key_names_file_key_and_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\ndata:\n  retries: 3\n  timeout_s: 5\n  retries: 4\n")
    with pytest.raises(ParamsError) as caught:
        load_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path} sets data.retries twice, at line 4 and at line 6.")
    assert "DVC refuses duplicate keys" in message


def test_duplicate_key_on_one_line_names_both_columns():
    with pytest.raises(ParamsError) as caught:
        loads_yaml("model: {units: [8], units: [16]}\n", source="p.yaml")
    assert str(caught.value).startswith(
        "p.yaml sets model.units twice, at line 1, columns 9 and 21"
    )


def test_duplicate_key_inside_a_list_names_its_path():
    with pytest.raises(ParamsError, match=r"sets runs\[1\]\.epochs twice, at line 4 and at line 5"):
        loads_yaml("runs:\n  - epochs: 1\n  - name: b\n    epochs: 2\n    epochs: 3\n")


def test_syntax_error_names_file_line_and_column():
    with pytest.raises(ParamsError) as caught:
        loads_yaml("data:\n  datasets: [digits\nsplit: {}\n", source="p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml is not valid YAML: line 3, column 6:"), message
    assert "flow sequence at line 2, column 13" in message


def test_undefined_alias_names_the_place():
    with pytest.raises(ParamsError, match=r"line 2, column 9: found undefined alias 'nope'"):
        loads_yaml("a: 1\nb: {<<: *nope}\n")


def test_only_project_import_is_errors():
    """A leaf module: the params schema and the flows import it, it imports none of them."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(yamlio.__file__).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    project = {name for name in imported if name.split(".")[0] in ("pipeline", "flows")}
    assert project == {"pipeline.core.errors"}
