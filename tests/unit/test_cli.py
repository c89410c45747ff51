"""The command line: every group and action is defined, 0.1 spellings still work with a note, and an import
failure in a command's module is an error rather than a missing command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.main import DEPRECATED, build_parser, main, modernize

GROUPS = {
    "index": {"build", "rollback"},
    "model": {"train", "evaluate", "promote", "rollback"},
    "labels": {"grade", "stats", "export"},
    "judge": {"serve", "calibrate"},
    "opensearch": {"start", "stop", "status", "install-pipeline", "uninstall-pipeline"},
}


def _choices(parser, name):
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[name] if name else sub.choices


def test_every_group_has_its_actions():
    top = _choices(build_parser(), None)
    assert {"index", "serve", "search", "labels", "model", "refresh", "judge", "opensearch", "demo", "status"} <= set(top)
    for group, actions in GROUPS.items():
        assert set(_choices(top[group], None)) == actions, group


@pytest.mark.parametrize(
    "old, new",
    [
        (["index", "--catalog", "myntra"], ["index", "build", "--catalog", "myntra"]),
        (["index", "--rollback", "--alias", "a"], ["index", "rollback", "--alias", "a"]),
        (["label", "--queries", "3"], ["labels", "grade", "--queries", "3"]),
        (["grade"], ["labels", "grade"]),
        (["judgments", "stats", "--json"], ["labels", "stats", "--json"]),
        (["train", "--epochs", "1"], ["model", "train", "--epochs", "1"]),
        (["evaluate"], ["model", "evaluate"]),
        (["rollback"], ["model", "rollback"]),
        (["judge-server", "--port", "0"], ["judge", "serve", "--port", "0"]),
    ],
)
def test_old_spellings_are_rewritten_with_a_note(old, new):
    notes = []
    assert modernize(old, notes.append) == new
    assert len(notes) == 1 and "deprecated" in notes[0] and " ".join(new[:2]) in notes[0]
    build_parser().parse_args(new)  # and the new spelling parses


def test_current_spellings_pass_unchanged():
    for argv in (["index", "build"], ["model", "rollback"], ["serve"], ["demo", "--limit", "5"]):
        notes = []
        assert modernize(list(argv), notes.append) == argv and not notes
    assert set(DEPRECATED) == {"label", "grade", "judgments", "train", "evaluate", "rollback", "judge-server"}


def test_model_rollback_and_promote_on_a_registry(tmp_path, capsys):
    from fashion_rerank.registry import ModelRegistry

    from .conftest import promote_new

    reg = ModelRegistry(tmp_path, "m")
    first = promote_new(reg)
    second = promote_new(reg)
    assert main(["model", "rollback", "--registry", str(tmp_path), "--model-name", "m"]) == 0
    assert reg.current() == first
    assert main(["model", "promote", second, "--registry", str(tmp_path), "--model-name", "m"]) == 0
    assert reg.current() == second
    assert main(["model", "promote", "no-such-version", "--registry", str(tmp_path), "--model-name", "m"]) == 1
    assert reg.current() == second
    assert "no-such-version" in capsys.readouterr().err


def test_a_broken_command_module_is_an_error_not_a_missing_command(tmp_path):
    # Shadow cli.labels with a module that fails to import, then run a labels command in a subprocess.
    pkg = tmp_path / "cli"
    pkg.mkdir()
    import cli

    for f in ("__init__.py", "main.py"):
        (pkg / f).write_text((__import__("pathlib").Path(cli.__file__).parent / f).read_text())
    (pkg / "labels.py").write_text("import module_that_does_not_exist_anywhere\n")
    env_path = f"{tmp_path}"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from cli.main import main; sys.exit(main(['labels', 'stats']))",
            env_path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "module_that_does_not_exist_anywhere" in proc.stderr
    # --help still lists the group: commands are defined in one place, not discovered by import
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from cli.main import main; sys.exit(main(['--help']))",
            env_path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "labels" in proc.stdout


def test_status_reports_what_runs_and_which_model(tmp_path, monkeypatch, capsys):
    import json

    from fashion_rerank.registry import ModelRegistry

    from .conftest import promote_new

    version = promote_new(ModelRegistry(tmp_path / "models", "fashion-ce"))
    monkeypatch.setenv("FR_MODEL_REGISTRY_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("FR_SERVE_GRPC_PORT", "9")
    assert main(["status", "--json"]) == 3  # OpenSearch unreachable: not ready
    st = json.loads(capsys.readouterr().out)
    assert st["model"]["current"] == version and st["model"]["versions"] == 1
    assert st["sidecar"]["running"] is False and st["opensearch"]["reachable"] is False
    assert main(["status"]) == 3
    out = capsys.readouterr().out
    assert f"current {version}" in out and "not running" in out and "not reachable" in out
