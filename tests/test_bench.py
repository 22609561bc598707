"""revmux bench: record layout, speed-up and ceiling arithmetic, peak-memory measurement, the breakdown read from
profiler events, the options, plot. No timing asserts."""

import argparse
import copy
import dataclasses
import inspect
import json
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch
from torch.profiler import record_function

import revmux
from revmux import bench
from revmux.bench import timing
from revmux.bench.profiling import quiet_profile

COMPOSE_SIZES = (2, 4)
BATCH_SIZES = (3, 4)
LENGTHS = (8,)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    accuracy = out / "accuracy.json"
    accuracy.write_text(json.dumps([{"compose_size": 1, "accuracy": 0.9}, {"compose_size": 2, "accuracy": 0.85},
                                    {"compose_size": 4, "accuracy": 0.8, "label": "N=4 adapter"}]))
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        ["--model_name", "tiny", "--compose_sizes", *map(str, COMPOSE_SIZES), "--batch_sizes", *map(str, BATCH_SIZES),
         "--lengths", *map(str, LENGTHS), "--repeats", "2", "--warmup", "1", "--ragged", "--breakdown",
         "--no_progress", "--accuracy_json", str(accuracy), "--output_dir", str(out)])
    results = bench.main(args)
    return out, results


def test_ceiling_hand_values():
    assert bench.speedup_ceiling(12, 6, 2) == pytest.approx(4 / 3)
    assert bench.speedup_ceiling(6, 3, 4) == pytest.approx(1.6)
    assert bench.speedup_ceiling(6, 3, 1) == pytest.approx(1.0)
    assert bench.speedup_ceiling(4, 0, 2) == pytest.approx(2.0)
    assert bench.speedup_ceiling(6, 2, 2) == pytest.approx(6 / (2 + 2))
    with pytest.raises(ValueError, match="K=7"):
        bench.speedup_ceiling(6, 7, 2)


def test_json_has_one_record_per_configuration(run):
    out, results = run
    saved = json.loads((out / "bench.json").read_text())
    assert set(saved) == {"meta", "records", "accuracy", "breakdown", "files"}
    meta, records = saved["meta"], saved["records"]
    assert meta["n_layers"] == 4 and meta["combine_first"] == 2 and meta["compose_sizes"] == list(COMPOSE_SIZES)
    assert {"machine", "memory_method", "base_param_bytes", "adapter_param_bytes", "ceilings"} <= set(meta)
    assert meta["adapter_dtype"] == "float32"
    expected = [(b, t, n) for b in BATCH_SIZES for t in LENGTHS for n in (1, *COMPOSE_SIZES)]
    assert [(r["batch_size"], r["length"], r["compose_size"]) for r in records] == expected
    keys = {"variant", "times_s", "median_s", "median_ms", "throughput", "speedup", "ceiling", "fraction_of_ceiling",
            "speedup_paired", "peak_bytes", "peak_mb", "memory_ratio"}
    for r in records:
        assert keys <= set(r)
        assert len(r["times_s"]) == 2
        assert r["variant"] == ("base" if r["compose_size"] == 1 else f"N={r['compose_size']}")
    assert saved["records"] == json.loads(json.dumps(results["records"]))


def test_speedup_and_fraction_recomputed_from_raw_timings(run):
    _, results = run
    meta = results["meta"]
    for b in BATCH_SIZES:
        for t in LENGTHS:
            rows = {r["compose_size"]: r for r in results["records"] if (r["batch_size"], r["length"]) == (b, t)}
            base_median = statistics.median(rows[1]["times_s"])
            for n, r in rows.items():
                median = statistics.median(r["times_s"])
                ceiling = meta["n_layers"] / (meta["combine_first"] + (meta["n_layers"] - meta["combine_first"]) / n)
                assert r["median_s"] == pytest.approx(median)
                assert r["speedup"] == pytest.approx(base_median / median)
                assert r["throughput"] == pytest.approx(b / median)
                assert r["ceiling"] == pytest.approx(ceiling)
                assert r["fraction_of_ceiling"] == pytest.approx(base_median / median / ceiling)
                paired = statistics.median(x / y for x, y in zip(rows[1]["times_s"], r["times_s"]))
                assert r["speedup_paired"] == pytest.approx(paired)
                assert r["peak_bytes"] > 0
                assert r["memory_ratio"] == pytest.approx(r["peak_bytes"] / rows[1]["peak_bytes"])


def test_breakdown_rows(run):
    _, results = run
    rows = results["breakdown"]
    assert [r["compose_size"] for r in rows] == [1, *COMPOSE_SIZES]
    assert rows[0]["mux_ms"] == 0 and rows[0]["demux_ms"] == 0
    for r in rows[1:]:
        assert r["mux_ms"] > 0 and r["demux_ms"] > 0
        assert r["ideal_total_ms"] + r["overhead_ms"] == pytest.approx(r["total_ms"])
    assert "torch.profiler" in results["meta"]["breakdown_method"]


def test_breakdown_reads_the_layer_profiler_events(run):
    """Every part of a tiny model's forward is read from profiler events: RevMuxLayer's revmux::* labels for the
    multiplexer, demultiplexer, argument grouping and the blocks on composites; the benchmark's own for the rest."""
    _, results = run
    base, *muxed = results["breakdown"]
    assert base["layers_before_k_ms"] > 0 and base["layers_after_k_ms"] > 0 and base["embeddings_ms"] > 0
    assert base["group_args_ms"] == 0
    for r in muxed:
        assert r["mux_ms"] > 0 and r["demux_ms"] > 0 and r["layers_after_k_ms"] > 0 and r["group_args_ms"] > 0
        assert r["layers_before_k_ms"] > 0 and r["embeddings_ms"] > 0
    # per forward the parts never overlap (test_parts_are_each_range_less_the_labelled_ranges_inside), so the
    # remainder is never negative (medians of the parts need not add up to the median total)
    assert all(r["other_ms"] >= 0 for r in results["breakdown"])


@pytest.mark.parametrize("mib", [4, 9])
def test_peak_memory_detects_a_known_allocation(mib):
    def allocate():
        x = torch.ones(mib * 2**20 // 4)  # float32
        return float(x.sum())

    _, peak = bench.measure_peak_memory(allocate)
    assert peak >= mib * 2**20
    assert peak < (mib + 1) * 2**20


def test_peak_memory_counts_frees():
    def sequential():
        a = torch.empty(2**20)  # 4 MiB
        del a
        b = torch.empty(2**21)  # 8 MiB, after the first is freed
        return b

    def overlapping():
        a = torch.empty(2**20)
        b = torch.empty(2**21)
        return a, b

    assert bench.measure_peak_memory(sequential)[1] == 8 * 2**20
    assert bench.measure_peak_memory(overlapping)[1] == 12 * 2**20


def test_peak_memory_of_a_linear_layer_is_its_output():
    layer = torch.nn.Linear(64, 256)
    x = torch.randn(512, 64)
    with torch.inference_mode():
        _, peak = bench.measure_peak_memory(lambda: layer(x))
    assert peak == 512 * 256 * 4


def test_png_written(run):
    pytest.importorskip("matplotlib")
    out, results = run
    png = out / "bench.png"
    assert results["files"]["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_skipped_without_matplotlib(run, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert bench.plot_results(run[1], tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_format_table_has_a_row_per_record(run):
    _, results = run
    table = bench.format_table(results)
    assert len(table.splitlines()) == 3 + len(results["records"])


def test_process_clock_and_unragged_inputs():
    threads = torch.get_num_threads()
    results = bench.run_benchmark("tiny", compose_sizes=[2], batch_sizes=[2], lengths=[4], repeats=1, warmup=0,
                                  clock="process", threads=1, progress=False, verbose=False)
    assert results["meta"]["machine"]["torch_threads"] == 1
    assert torch.get_num_threads() == threads  # restored
    assert results["meta"]["clock"] == "process" and results["meta"]["ragged"] is False
    assert [r["variant"] for r in results["records"]] == ["base", "N=2"]
    assert results["files"] == {} and results["breakdown"] is None


def test_bad_accuracy_json(tmp_path):
    path = tmp_path / "acc.json"
    path.write_text(json.dumps([{"compose_size": "2", "accuracy": 0.8}]))
    with pytest.raises(ValueError, match="entry 0"):
        bench.load_accuracy(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="compose_sizes"):
        bench.run_benchmark("tiny", compose_sizes=[1], progress=False, verbose=False)
    with pytest.raises(ValueError, match="combine_first=4"):
        bench.run_benchmark("tiny", combine_first=4, batch_sizes=[2], lengths=[4], repeats=1, warmup=0,
                            progress=False, verbose=False)
    with pytest.raises(FileNotFoundError, match="not one of"):
        bench.run_benchmark("/nonexistent/folder", progress=False, verbose=False)


def test_muxed_peak_memory_does_not_exceed_the_base_model():
    """The multiplexed forward never holds more activation memory than the base model's (issue target)."""
    import copy

    import revmux
    from revmux.bench import build_base_model, make_inputs, measure_peak_memory

    base = build_base_model("tiny").eval()
    inputs = make_inputs(32, 48, base.config.vocab_size)
    peaks = {}
    for n in (1, 2, 4):
        model = base if n == 1 else revmux.get_revmux_model(copy.deepcopy(base), revmux.RevMuxConfig(compose_size=n))
        with torch.inference_mode():
            _, peaks[n] = measure_peak_memory(lambda: model.eval()(**inputs))
    assert peaks[2] <= peaks[1] and peaks[4] <= peaks[1], peaks


def test_bf16_variants_run_their_adapters_in_bf16():
    """A served bf16 model multiplexes in bf16; PEFT's float32 adapter default would run the mux in float32."""
    base = bench.build_base_model("tiny", dtype="bfloat16")
    variants = bench.build_variants(base, [2, 4], combine_first=2)
    dtypes = {p.dtype for _, _, model in variants[1:] for name, p in model.named_parameters() if "revmux_" in name}
    assert dtypes == {torch.bfloat16}


def test_layer_labels_its_work_for_the_profiler():
    """The breakdown depends on these record_function names in revmux/tuner/layer.py (RevMuxLayer.forward)."""
    base = bench.build_base_model("tiny")
    model = revmux.get_revmux_model(copy.deepcopy(base), revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=2,
                                                                            combine_first=1, inference_mode=True))
    inputs = bench.make_inputs(4, 8, base.config.vocab_size)
    with torch.inference_mode(), quiet_profile(torch.device("cpu")) as prof:
        model.eval()(**inputs)
    counts = {}
    for event in prof.events():
        counts[event.name] = counts.get(event.name, 0) + 1
    expected = {"revmux::mux": 1, "revmux::demux": 1, "revmux::muxed_layer": 3}  # layers K..L-1 = 1..3
    found = {name: counts.get(name, 0) for name in expected}
    assert found == expected, (f"RevMuxLayer should label its work with torch.profiler.record_function: expected "
                               f"{expected}, found {found}")
    assert counts.get("revmux::group_arguments", 0) >= 1, "no revmux::group_arguments event"


def test_parts_are_each_range_less_the_labelled_ranges_inside():
    """Nested labels are not counted twice: a part's time excludes the labelled ranges inside it."""
    with quiet_profile(torch.device("cpu")) as prof:
        with record_function(timing.FORWARD_LABEL):
            with record_function("revmux::muxed_layer"):
                time.sleep(0.02)
                with record_function("revmux::mux"):
                    time.sleep(0.01)
            time.sleep(0.005)
    seconds, counts = timing._seconds_per_part(prof.events(), on_cuda=False)
    assert counts == {timing.FORWARD_LABEL: 1, "revmux::muxed_layer": 1, "revmux::mux": 1}
    assert seconds["mux"] >= 0.01 and seconds["layers_after_k"] >= 0.02 and seconds["other"] >= 0.005
    assert seconds["total"] == pytest.approx(seconds["mux"] + seconds["layers_after_k"] + seconds["other"])
    assert seconds["total"] >= 0.035


def test_breakdown_fails_clearly_without_the_layer_labels():
    """A "multiplexed" variant whose forward shows no revmux::* events (here: a plain model) is an error, not zeros."""
    base = bench.build_base_model("tiny")
    variants = [("base", 1, base), ("N=2", 2, copy.deepcopy(base))]
    inputs = bench.make_inputs(2, 4, base.config.vocab_size)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="revmux::mux.*record_function"):
        bench.overhead_breakdown(variants, inputs, torch.device("cpu"), n_layers=4, combine_first=2, repeats=1)
    assert not base._forward_hooks and not base._forward_pre_hooks  # the labelling hooks are removed again


def test_profiler_prints_nothing_of_its_own(capfd):
    def allocate():
        os.write(2, b"a line of the measured code\n")
        return torch.ones(1000)

    capfd.readouterr()
    bench.measure_peak_memory(allocate)
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err
    assert "a line of the measured code" in err


# ---- options ------------------------------------------------------------------------------------------------------
def test_parser_defaults_are_the_config_defaults():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    parsed = vars(parser.parse_args([]))
    defaults = bench.BenchConfig()
    cli_fields = [f.name for f in dataclasses.fields(bench.BenchConfig) if f.metadata.get("cli", True)]
    assert parsed == {name: getattr(defaults, name) for name in cli_fields}
    assert bench.BenchConfig.from_namespace(parser.parse_args([])) == defaults
    flags = {s for action in parser._actions for s in action.option_strings}
    assert {"--model_name", "--combine_first", "--compose_sizes", "--batch_sizes", "--lengths", "--repeats",
            "--warmup", "--dtype", "--device", "--threads", "--accuracy_json", "--ragged", "--breakdown", "--clock",
            "--seed", "--compile", "--no_progress", "--output_dir"} <= flags
    assert all(f.metadata.get("help") for f in dataclasses.fields(bench.BenchConfig))


def test_parsed_flags_reach_the_config():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--model_name", "tiny", "--compose_sizes", "3", "--batch_sizes", "5", "6",
                              "--repeats", "2", "--no_progress", "--compile", "--clock", "process", "--threads", "1"])
    config = bench.BenchConfig.from_namespace(args)
    assert (config.model_name, config.compose_sizes, config.batch_sizes, config.repeats) == ("tiny", [3], [5, 6], 2)
    assert config.progress is False and config.use_compile is True and config.clock == "process"
    assert config.threads == 1 and config.verbose is True


@pytest.mark.parametrize("options, message", [
    ({"compose_sizes": [1]}, "compose_sizes must be distinct integers >= 2"),
    ({"compose_sizes": [2, 2]}, "compose_sizes must be distinct"),
    ({"compose_sizes": []}, "compose_sizes must be a non-empty list"),
    ({"batch_sizes": [0]}, "batch sizes and lengths must be positive"),
    ({"repeats": 0}, "repeats must be an integer >= 1, got 0"),
    ({"warmup": -1}, "warmup must be an integer >= 0"),
    ({"threads": 0}, "threads must be an integer >= 1"),
    ({"combine_first": -1}, "combine_first must be an integer >= 0"),
    ({"dtype": "float16"}, "dtype must be one of float32, bfloat16, got 'float16'"),
    ({"clock": "cpu"}, "clock must be one of wall, process"),
    ({"device": "mps"}, "device must be one of cpu, cuda"),
    ({"breakdown": True, "use_compile": True}, "without --compile"),
])
def test_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        bench.BenchConfig(**options)


def test_run_benchmark_takes_the_config_fields():
    names = list(inspect.signature(bench.run_benchmark).parameters)
    assert names == [f.name for f in dataclasses.fields(bench.BenchConfig)]
    with pytest.raises(ValueError, match="repeats"):
        bench.run_benchmark("tiny", repeats=0)


def test_python_m_revmux_bench_help():
    out = subprocess.run([sys.executable, "-m", "revmux.bench", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--breakdown" in out and "--no_progress" in out


def test_the_serving_stack_is_measured_side_by_side():
    """--precisions int8: the base and every N again in int8, in the same rounds, speed-ups over the plain base."""
    from revmux.bench import run_benchmark

    results = run_benchmark("tiny", compose_sizes=[2], batch_sizes=[8], lengths=[16], repeats=2, warmup=1,
                            precisions=["int8"], progress=False, verbose=False)
    records = {r["variant"]: r for r in results["records"]}
    assert set(records) == {"base", "N=2", "base+int8", "N=2+int8"}
    assert records["N=2+int8"]["compose_size"] == 2 and records["base+int8"]["compose_size"] == 1
    for r in records.values():
        assert r["speedup"] == pytest.approx(records["base"]["median_s"] / r["median_s"])
    assert set(results["meta"]["precision_facts"]) == {"base+int8", "N=2+int8"}


def test_serving_stack_options_are_checked():
    from revmux.bench.config import BenchConfig

    assert BenchConfig(precisions=["int8", "plain", "int8"]).precisions == ["plain", "int8"]
    with pytest.raises(ValueError, match="must be among"):
        BenchConfig(precisions=["int4"])
    with pytest.raises(ValueError, match="CPU only"):
        BenchConfig(precisions=["int8"], device="cuda")
    with pytest.raises(ValueError, match="compiles every variant"):
        BenchConfig(precisions=["int8"], use_compile=True)
