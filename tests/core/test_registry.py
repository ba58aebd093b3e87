import pytest

from kmx_eval.errors import ParamsError
from kmx_eval.models.combination import check_combination_name, parse_combination
from kmx_eval.registry import Registry


def test_registry_lookup_suggests_the_close_name():
    reg = Registry("explainer")
    reg.register("gradcam")(object)
    reg.register("margin")(object)
    with pytest.raises(ParamsError, match=r"explain.explainers\[0\]: unknown explainer 'gradcamm' \(did you mean 'gradcam'\?\); valid: gradcam, margin"):
        reg.get("gradcamm", where="explain.explainers[0]")
    with pytest.raises(ValueError, match="twice"):
        reg.register("margin")(object)


@pytest.mark.parametrize("name,blocks", [("B4", (4,)), ("B34", (3, 4)), ("B234", (2, 3, 4)), ("B1234", (1, 2, 3, 4)), ("B24", (2, 4))])
def test_parse_combination(name, blocks):
    c = parse_combination(name, weighting="channels")
    assert c.blocks == blocks and c.name == name and c.shallowest == blocks[0]


@pytest.mark.parametrize("bad,words", [("B0", "'0' is not a block digit"), ("B43", "'B34'"), ("B44", "strictly increasing"), ("B", "empty"), ("", "empty"), ("4", "invalid"), ("b4", "invalid")])
def test_parse_combination_rejects(bad, words):
    with pytest.raises(ParamsError, match=words):
        parse_combination(bad, weighting="channels")
    with pytest.raises(ParamsError, match=words):  # what the params validator checks
        check_combination_name(bad, where="combinations[0]")
