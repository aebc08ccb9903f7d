"""What the timing tools share (bench.tools.workload): interleaved repeats and one set of common options."""
from bench.tools import anytime_overhead, loop_speed
from bench.tools.workload import interleaved_times


def test_interleaved_times_alternates_the_runs_and_keeps_the_last_result():
    calls = []
    runs = {name: (lambda name=name: calls.append(name) or len(calls)) for name in ("a", "b")}
    wall, cpu, last = interleaved_times(runs, repeats=3)
    assert calls == ["a", "b"] * 3   # a busy machine slows both alike
    assert {k: len(v) for k, v in wall.items()} == {k: len(v) for k, v in cpu.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in wall.values() for t in v)
    assert last == {"a": 5, "b": 6}


def test_the_timers_share_their_common_options_and_keep_their_own():
    a = anytime_overhead.build_parser().parse_args([])
    b = loop_speed.build_parser().parse_args(["--repeats", "5"])
    assert (a.bundle, a.images, a.repeats, a.steps, a.loss) == ("synthetic-faces", 32, 3, 100, "idinvert")
    assert (b.bundle, b.images, b.repeats, b.steps, b.threads) == ("synthetic-faces", 32, 5, 30, "1")
