"""benchmarks/cartpole_ppo.py: runs the notebook's PPO on CartPole and reports one JSON line per seed."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cartpole_ppo.py"
spec = importlib.util.spec_from_file_location("cartpole_ppo", SCRIPT)
cartpole_ppo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cartpole_ppo)


def test_a_short_run_reports_sensible_figures(capsys):
    (result,) = cartpole_ppo.main(["--steps", "2048", "--seeds", "3"])
    assert result["steps"] == 2048 and result["steps_per_second"] > 0 and result["episodes"] > 10
    assert result["solve_step"] is None, "2,048 steps are far too few to balance the pole for 475 steps"
    assert 8 < result["final_average"] < 475
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["seed"] == 3


def test_too_few_steps_is_a_clear_error():
    with pytest.raises(SystemExit, match="at least one rollout"):
        cartpole_ppo.main(["--steps", "100", "--seeds", "1"])
