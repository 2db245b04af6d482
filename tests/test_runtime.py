from __future__ import annotations

import pytest
import torch

from contrastive_lab import runtime


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("no", False), ("1", True), ("true", True)])
def test_smoke_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(runtime.SMOKE_ENV, value)
    assert runtime.smoke_mode() is expected
    assert runtime.pick("s", "d") == ("s" if expected else "d")


def test_smoke_mode_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv(runtime.SMOKE_ENV, "maybe")
    with pytest.raises(ValueError, match="CONTRASTIVE_LAB_SMOKE='maybe' is not understood"):
        runtime.smoke_mode()


def test_cpu_bf16_detection_agrees_with_cpu_flags():
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo here")
    has_flag = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    if has_flag:
        assert runtime.cpu_supports_bf16()
        assert runtime.autocast_dtype("cpu") is torch.bfloat16
    if not runtime.cpu_supports_bf16():
        assert runtime.autocast_dtype("cpu") is None


def test_cpu_bf16_detection_falls_back_to_fp32_without_the_flags(monkeypatch):
    import builtins

    runtime.cpu_supports_bf16.cache_clear()
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise OSError("not here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    try:
        assert runtime.cpu_supports_bf16() is False
        assert runtime.autocast_dtype("cpu") is None
    finally:
        runtime.cpu_supports_bf16.cache_clear()


def test_chapter_report_states_wall_time_memory_and_mode(monkeypatch):
    """The line a chapter ends with: wall time since the given start, the peak memory of this process
    (at least what a 64 MiB tensor adds), and the mode that ran."""
    import time

    import torch

    monkeypatch.setenv(runtime.SMOKE_ENV, "1")
    block = torch.ones(16 * 2**20)  # 64 MiB, touched
    line = runtime.chapter_report(start=time.monotonic() - 90)
    assert line.startswith("chapter report: 1.5 min wall") and "smoke mode" in line
    assert runtime.peak_memory_mib() >= 64 and float(block[0]) == 1.0
    monkeypatch.setenv(runtime.SMOKE_ENV, "0")
    assert "demo mode" in runtime.chapter_report()
