"""``runners/qd_visitation.py``: a QD sweep's visitation maps, each setting's seeds summed."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runners"))

import qd_visitation  # noqa: E402

from evo_svpg.cli import main  # noqa: E402

SPEC = """seeds = [0, 1]
[base]
env = "evo_svpg/MountainCarSparse-v0"
particles = 2
steps_per_particle = 400
envs_per_particle = 2
hidden_sizes = [8]
iterations = 2
qd_every = 1
final_eval_episodes = 1
[grid]
mode = ["pure", "independent"]
"""


def test_the_maps_sum_each_settings_finished_runs_in_the_specs_order(tmp_path, capsys):
    spec, out = tmp_path / "spec.toml", tmp_path / "sweep"
    spec.write_text(SPEC)
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    (out / "mode=independent" / "seed1.record.json").unlink()  # as if unfinished: not drawn
    maps, extent, env, runs = qd_visitation.visitation(out)
    assert list(maps) == ["mode=pure", "mode=independent"]
    assert (env, runs) == ("evo_svpg/MountainCarSparse-v0", 3)
    for name, seeds in (("mode=pure", (0, 1)), ("mode=independent", (0,))):
        direct = 0
        for seed in seeds:
            with np.load(out / name / f"seed{seed}" / "qd.npz") as data:
                direct = direct + data["visitation"]
                assert extent == pytest.approx(np.ravel(data["visitation_range"]).tolist())
        assert np.array_equal(maps[name], direct)
        assert direct.sum() > 0
    target = tmp_path / "v.png"
    assert qd_visitation.main([str(out), "--out", str(target)]) == 0
    assert target.stat().st_size > 0
    assert qd_visitation.main([str(tmp_path)]) == 2
    assert "not a sweep directory (no sweep.json)" in capsys.readouterr().err
