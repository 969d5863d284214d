"""Random cross-check of the scorers against the independent oracles in oracle_scoring.py
(issue 11): every anticipation error and phase metric must match on a few hundred random cases."""
from oracle_scoring import crosscheck_anticipation, crosscheck_phase


def test_anticipation_matches_oracle_on_random_cases():
    r = crosscheck_anticipation(250, seed=0)
    assert r["cases"] == 250 and r["comparisons"] > 5000
    assert r["matches"] == r["comparisons"], r["examples"]


def test_phase_matches_oracle_on_random_cases():
    r = crosscheck_phase(250, seed=1)
    assert r["cases"] == 250 and r["comparisons"] == 250 * 51
    assert r["matches"] == r["comparisons"], r["examples"]
