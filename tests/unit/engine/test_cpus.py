"""What the container may use: CPU lists and the cgroup's limits (v1 and v2)."""

from __future__ import annotations

from devloop.engine import cpus

from .limits import GIB


def test_cpu_lists_use_the_range_syntax():
    assert cpus.format_cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpus.format_cpu_list([3]) == "3"


def test_cgroup_v2_limits_are_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text("4294967296\n")
    assert cpus.cgroup_cpu_limit(tmp_path) == 1.5
    assert cpus.cgroup_memory_limit(tmp_path) == 4 * GIB


def test_cgroup_v2_without_limits_reads_as_none(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert cpus.cgroup_cpu_limit(tmp_path) is None
    assert cpus.cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_limits_are_read(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cpus.cgroup_cpu_limit(tmp_path) == 2.0
    assert cpus.cgroup_memory_limit(tmp_path) is None
