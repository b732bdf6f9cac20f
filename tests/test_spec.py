"""Spec grammar: canonical names, round trips, and one clear error per kind of bad input."""
import re

import pytest
import torch

import lab


@pytest.mark.parametrize("spellings,canonical", [
    (["erf|hshift=0.5", "erf|hshift=0.50", "erf|hshift=.5", " ERF | hshift = 0.5 ", "erf|hshift=5e-1"],
     "erf|hshift=0.5"),
    (["erf|vshift=-2", "erf|vshift=-2.0", "erf|vshift=-2.000"], "erf|vshift=-2"),
    (["erf", "erf|hshift=0", "erf|vshift=-0", "erf|blend=0", "erf|flat=0.0"], "erf"),
    (["arcsinh|clip=1", "arcsinh|clip=1.0"], "arcsinh|clip=1"),
    (["erf|neg"], "erf|neg"),
    (["tanh|blend=0.01"], "tanh|blend=0.01"),
])
def test_equivalent_spellings_share_one_canonical_name(spellings, canonical):
    assert {lab.canonical(s) for s in spellings} == {canonical}


@pytest.mark.parametrize("spec", ["erf", "erf|hshift=-0.1", "tanh|vshift=2|neg", "linear|clip=0.5",
                                  "arctan|flat=0.1|blend=0.5", "power23|clip=3"])
def test_round_trip(spec):
    once = lab.canonical(spec)
    assert lab.canonical(once) == once
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(lab.pointwise(once).value(x), lab.pointwise(spec).value(x), rtol=0, atol=0)


def test_the_ends_of_a_domain_are_valid():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(lab.pointwise("erf|blend=1").value(x), x, rtol=0, atol=0)     # Eq. 7 at λ = 1: x


def test_a_pointwise_function_chains_the_incoming_gradient():
    """lab.pointwise(spec)(x) inside a larger graph: backward multiplies the upstream gradient by f'."""
    x = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    assert torch.autograd.gradcheck(lab.pointwise("erf|hshift=0.3|clip=0.9|blend=0.2"), (x,))


@pytest.mark.parametrize("spec,fragment", [
    ("erff", "unknown base function 'erff'"),
    ("", "empty point-wise spec"),
    ("erf|hshft=1", "unknown transform 'hshft'"),
    ("erf|hshift=abc", "bad number 'abc'"),
    ("erf|hshift=nan", "outside its domain"),
    ("erf|clip=0", "clip=0 is outside its domain (λ > 0)"),
    ("erf|clip=-1", "outside its domain"),
    ("erf|blend=1.5", "blend=1.5 is outside its domain (0 ≤ λ ≤ 1)"),
    ("erf|flat=-0.1", "flat=-0.1 is outside its domain (λ ≥ 0)"),
    ("erf|neg=1", "takes no value"),
    ("erf|hshift", "needs a value"),
    ("erf|hshift=1_0", "bad number '1_0' for transform 'hshift'"),
])
def test_bad_specs_raise_value_error_naming_the_part(spec, fragment):
    with pytest.raises(ValueError) as info:
        lab.pointwise(spec)
    assert fragment in str(info.value)


def test_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match="choose one of: erf, tanh, arctan"):
        lab.canonical("sigmoid")
    with pytest.raises(ValueError, match=r"hshift=λ .*neg"):
        lab.canonical("erf|shift=1")


def test_norm_names():
    assert lab.canonical_norm("LayerNorm") == "layernorm"
    assert lab.canonical_norm("erf|hshift=.5") == "erf|hshift=0.5"
    assert lab.is_norm_name("rmsnorm") and not lab.is_norm_name("batchnorm")
    with pytest.raises(ValueError, match="layernorm, rmsnorm"):
        lab.canonical_norm("batchnorm")


def test_a_norm_name_error_offers_the_baselines_only_where_they_are_an_alternative():
    """A misspelt baseline is named; a known function with a bad transform is told about its transform alone."""
    with pytest.raises(ValueError, match=r"or derf\) \(did you mean 'layernorm'\?\)$"):
        lab.canonical_norm("layrnorm")
    with pytest.raises(ValueError, match=r"\(did you mean 'erf'\?\)") as info:   # not also 'derf'
        lab.canonical_norm("erff")
    assert str(info.value).count("did you mean") == 1
    for spec in ("erf|blend=2", "erf|hshft=1"):
        with pytest.raises(ValueError) as info:
            lab.canonical_norm(spec)
        assert "baseline" not in str(info.value)
    with pytest.raises(ValueError, match="empty point-wise spec"):
        lab.canonical_norm(["erf"])


def test_every_base_and_transform_name_is_safe_in_a_file_name_and_no_norm_name():
    """results.record_path writes | and = as __ and _: a name with _ would make two specs one file name."""
    assert [name for name in [*lab.BASES, *lab.TRANSFORMS] if not re.fullmatch(r"[a-z0-9]+", name)] == []
    assert not {*lab.layers.NORMALIZATIONS, lab.layers.DERF} & set(lab.BASES)     # a norm name would hide the base


def test_a_number_in_a_name_has_no_negative_zero():
    assert lab.perturb.format_number(-0.0) == "0"


def test_two_spellings_of_one_spec_are_one_function():
    """Equal and of one hash (a dict key, a set member), as their canonical name is one."""
    a, b = lab.pointwise("erf|hshift=.5"), lab.pointwise("ERF|hshift=0.50")
    assert a == b and hash(a) == hash(b) and a != lab.pointwise("erf")
