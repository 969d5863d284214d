"""Layering: no import cycles between surgflow's subpackages (tests/import_graph.py reads the imports)."""
from import_graph import cycles, edges


def test_no_import_cycles_between_subpackages():
    e = edges()
    assert ("training", "models") in e, "import graph reader found no edges"
    found = cycles(e)
    assert not found, "; ".join(
        f"import cycle among {comp}: " + ", ".join(f"{a}->{b}" for (a, b) in sorted(e)
                                                   if a in comp and b in comp) for comp in found)
