"""What the visual QC costs: the figure steps' share from benchmark files, and the report's
opening in a real headless Chromium."""

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from debian_packages import install

from spineflow_dev.report_cost import FIGURE_STEPS, job_costs, open_time_ms, rule_costs

BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in",
                     "io_out", "mean_load", "cpu_time")  # fmt: skip


def _bench(path, wall_s, cpu_s):
    values = (wall_s, "0:00:01", 100, 200, 90, 95, 1, 2, 50, cpu_s)
    path.write_text("\t".join(BENCHMARK_COLUMNS) + "\n" + "\t".join(map(str, values)) + "\n")


def test_rule_costs_sum_each_step_over_its_jobs(tmp_path):
    _bench(tmp_path / "sub-01_ses-1_n4.tsv", 10.0, 19.0)
    _bench(tmp_path / "sub-02_ses-1_n4.tsv", 8.0, 15.0)
    _bench(tmp_path / "sub-01_ses-1_figure.tsv", 2.0, 1.5)
    _bench(tmp_path / "cohortreport.tsv", 3.0, 2.5)
    costs = rule_costs(tmp_path)
    assert costs.loc["n4"].tolist() == [2, 18.0, 34.0]
    assert costs.loc["figure", "cpu_s"] == 1.5 and costs.loc["cohortreport", "jobs"] == 1
    assert list(costs.index) == ["n4", "cohortreport", "figure"]  # by CPU, largest first
    assert {"figure", "cohortreport"} <= set(FIGURE_STEPS)
    jobs = job_costs(tmp_path).set_index("step")
    assert jobs.loc["figure", ["participant", "session", "cpu_s"]].tolist() == ["01", "1", 1.5]
    assert jobs.loc["cohortreport", ["participant", "session"]].isna().all()


def test_a_jobs_cpu_is_the_one_its_log_states_where_it_does(tmp_path):
    benchmarks, logs = tmp_path / "benchmarks", tmp_path / "logs"
    benchmarks.mkdir()
    logs.mkdir()
    _bench(benchmarks / "sub-01_register.tsv", 60.0, 31.0)  # sampled 30 s before its end
    _bench(benchmarks / "sub-02_register.tsv", 50.0, 30.0)
    (logs / "sub-01_register.log").write_text(
        "... INFO spineflow: rule register done\n... INFO spineflow: rule register used "
        "58.250 CPU s\n"
    )
    jobs = job_costs(benchmarks).set_index("participant")
    assert jobs.loc["01", ["cpu_s", "benchmark_cpu_s"]].tolist() == [58.25, 31.0]
    assert jobs.loc["02", "cpu_s"] == 30.0  # no log: the benchmark's
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        rule_costs(tmp_path / "none")


def _png_data_uri() -> str:
    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_open_time_counts_broken_images_in_a_real_browser(tmp_path):
    install(["chromium"], ["chromium"])
    image = _png_data_uri()
    good = tmp_path / "good.html"
    good.write_text(f"<html><body><img src='{image}'><img src='{image}'></body></html>")
    opened = open_time_ms(good, repeats=2)
    assert opened["broken_images"] == 0 and 0 <= opened["median_ms"] <= opened["max_ms"]
    bad = tmp_path / "bad.html"
    bad.write_text(f"<html><body><img src='{image}'><img src='data:image/png;base64,AAAA'>"
                   "</body></html>")  # fmt: skip
    assert open_time_ms(bad, repeats=1)["broken_images"] == 1
