"""The app spec: every field checked, errors naming the field, files kept inside the app folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1os.deeploy import load_spec, parse_spec
from r1os.errors import SpecError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"

ECHO = """
name: echo
runtime: process
command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
replicas: 2
resources: {cpu: 0.5, memory_mb: 256, gpu: 0}
placement: {nodes: [], tags: [], exclude: []}
env: {KEY: value}
health: {http: /, interval_s: 1, failures: 3}
"""


def test_the_issue_example_parses() -> None:
    spec = parse_spec(ECHO)
    assert spec.name == "echo" and spec.replicas == 2 and spec.resources.cpu == 0.5
    assert spec.health.interval_s == 1 and spec.env == {"KEY": "value"}


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ("replicas: -1", "replicas"),
        ("replicas: 1000", "replicas"),
        ("resources: {cpu: 0}", "resources.cpu"),
        ("resources: {memory_mb: lots}", "resources.memory_mb"),
        ("health: {http: nope}", "health.http"),
        ("placement: {nodes: [not-an-address]}", "placement.nodes"),
        ("env: {PORT: '1'}", "env"),
        ("env: {'bad name': x}", "env"),
        ("files: {../../etc/passwd: x}", "files"),
        ("files: {/etc/passwd: x}", "files"),
        ("files: {a/../../b: x}", "files"),
        ("colour: blue", "colour"),
        ("job: -3", "job"),
    ],
)
def test_errors_name_the_field(patch: str, path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(ECHO + patch + "\n")
    assert err.value.path == path, str(err.value)
    assert str(err.value).startswith(path + ":")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: Echo\ncommand: [x]", "name"),
        ("name: '0xabc'\ncommand: [x]", "0x"),
        ("name: echo\nruntime: process", "needs a command"),
        ("name: echo\nruntime: docker", "needs an image"),
        ("name: echo\nruntime: plugin", "needs plugin"),
        ("name: echo\nruntime: plugin\nplugin: 'not valid'", "module.path:ClassName"),
        ("name: echo\nruntime: process\ncommand: [x]\nimage: busybox", "image is for runtime 'docker'"),
        ("- a list", "mapping"),
        ("name: [unclosed", "not YAML"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_spec(text)


def test_public_form_hides_secret_values() -> None:
    spec = parse_spec(ECHO + "secrets: {TOKEN: s3cret}\n")
    assert spec.public()["secrets"] == {"TOKEN": "<sealed>"}
    assert "s3cret" not in str(spec.public())


def test_inline_files_are_bounded() -> None:
    big = {"f.txt": "x" * (300 * 1024)}
    with pytest.raises(SpecError, match="per inline file"):
        parse_spec(f"name: a\ncommand: [x]\nfiles: {{f.txt: '{big['f.txt']}'}}\n")


def test_load_spec_reads_files_beside_it(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "app.yaml").write_text('name: a\ncommand: [python3, app.py]\nfiles: {app.py: "@app.py"}\n')
    assert load_spec(tmp_path / "app.yaml").files == {"app.py": "print('hi')\n"}
    (tmp_path / "bad.yaml").write_text('name: a\ncommand: [x]\nfiles: {x: "@../secret"}\n')
    with pytest.raises(SpecError, match="files.x"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("example", ["echo", "inference", "docker-echo"])
def test_shipped_examples_are_valid(example: str) -> None:
    path = EXAMPLES / example / "app.yaml"
    if not path.exists():
        pytest.fail(f"examples/apps/{example}/app.yaml is missing")
    assert load_spec(path).name
