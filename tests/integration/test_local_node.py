"""The local OpenSearch node: real process, real plugins."""

from fashion_rerank import local_node


def test_node_runs_with_knn_and_ml_plugins(opensearch_url):
    from fashion_rerank.settings import NodeSettings

    st = local_node.status()
    assert st["running"] and st["health"] in ("yellow", "green")
    assert st["version"] == NodeSettings().version  # FR_NODE_VERSION, default local_node.OPENSEARCH_VERSION
    assert "opensearch-knn" in st["plugins"]
    if st["version"] == local_node.OPENSEARCH_VERSION or "opensearch-ml" in st["plugins"]:
        assert {"opensearch-ml", "opensearch-neural-search"} <= set(st["plugins"])


def test_start_when_running_is_a_noop(opensearch_url):
    before = local_node.status()
    after = local_node.start(plugins="knn")
    assert after["pid"] == before["pid"] and after["running"]


def test_unknown_plugin_set_is_refused():
    import pytest

    with pytest.raises(local_node.NodeError, match="unknown plugin set"):
        local_node.plugin_sets("knn,bogus")


# ------------------------------------------------------------------ versions and Java (no node needed)


def test_versions_and_their_java_ranges():
    import pytest

    assert local_node.release().version == local_node.OPENSEARCH_VERSION == "2.19.1"
    two, three = local_node.release("2.19.1"), local_node.release("3.5.0")
    assert (two.min_java, two.max_java) == (11, 23) and (three.min_java, three.max_java) == (21, None)
    assert three.distribution == "org.opensearch.distribution.integ-test-zip:opensearch:3.5.0:zip"
    assert three.plugins["knn"] == [("org.opensearch.plugin:opensearch-knn:3.5.0.0:zip", "opensearch-knn")]
    assert two.plugins == local_node.PLUGINS
    assert set(local_node.TESTED_VERSIONS) == {"2.19.1", "3.5.0"}
    for bad in ("4.0.0", "3.5", "latest"):
        with pytest.raises(local_node.NodeError, match="unsupported OpenSearch version"):
            local_node.release(bad)


def _fake_jdk(root, name: str, version: str):
    """A folder with a bin/java that answers `-version` like a real JDK of `version`."""
    java = root / name / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2026-04-21' >&2\n")
    java.chmod(0o755)
    return str(root / name)


def test_java_choice_per_line(monkeypatch, tmp_path):
    import pytest

    from fashion_rerank.settings import NodeSettings

    jvm = tmp_path / "jvm"
    j17, j25 = _fake_jdk(jvm, "java-17", "17.0.15"), _fake_jdk(jvm, "temurin-25", "25.0.3")
    for var in ("JAVA_HOME", "OPENSEARCH_JAVA_HOME", "FR_NODE_JAVA_HOME", "FR_NODE_VERSION", "FASHION_RERANK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", f"{j17}/bin")  # the system's Java 17 on PATH
    monkeypatch.setattr(local_node, "JVM_DIRS", (jvm,))
    assert local_node.java_major(j25) == 25 and local_node.java_major(j17) == 17
    # 2.x: the Java on PATH, as always; 3.x: that one is too old, the newest JDK >= 21 under the JVM folder
    assert local_node._java_home(NodeSettings()) == j17
    assert local_node._java_home(NodeSettings(version="3.5.0")) == j25
    # FR_NODE_JAVA_HOME is taken when new enough, passed over when not
    assert local_node._java_home(NodeSettings(version="3.5.0", java_home=j17)) == j25
    # 2.x never runs on a Java without the Security Manager (24+)
    monkeypatch.setenv("JAVA_HOME", j25)
    assert local_node._java_home(NodeSettings()) == j17
    # no JDK >= 21 anywhere: the error says what is needed and what to install
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setattr(local_node, "JVM_DIRS", (tmp_path / "none",))
    with pytest.raises(local_node.NodeError, match=r"(?s)OpenSearch 3\.5\.0 needs Java 21 or newer.*Java 17.*Temurin"):
        local_node._java_home(NodeSettings(version="3.5.0"))


def test_cli_start_takes_a_version():
    from cli.main import build_parser

    args = build_parser().parse_args(["opensearch", "start", "--version", "3.5.0", "--plugins", "knn"])
    assert args.version == "3.5.0" and args.plugins == "knn"
    assert build_parser().parse_args(["opensearch", "start"]).version is None
