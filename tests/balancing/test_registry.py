"""The balancer registry and the short-run schedules every method declares."""

from __future__ import annotations

import pytest

from brats_cggm.balancing import available_balancers, balancer_class, create_balancer

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_every_method_is_registered_under_its_name():
    names = available_balancers()
    assert names == ["cggm", "inforeg", "joint", "mmpareto", "ogm_ge", "opm", "relearning"]
    for name in names:
        assert balancer_class(name).name == name


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown balancer 'cgm'.*cggm"):
        balancer_class("cgm")


@pytest.mark.parametrize("max_epochs", [1, 2, 20, 60])
def test_short_run_kwargs_construct_every_method(max_epochs):
    for name in available_balancers():
        kwargs = balancer_class(name).short_run_kwargs(max_epochs)
        balancer = create_balancer(name, modalities=MODALITIES, **kwargs)
        for key, value in kwargs.items():
            assert getattr(balancer, key) == value


def test_schedules_fit_the_budget():
    opm, relearning = balancer_class("opm"), balancer_class("relearning")
    assert opm.short_run_kwargs(1) == {"warmup_epochs": 0}  # acts from the first step
    assert opm.short_run_kwargs(20) == {"warmup_epochs": 2}
    assert relearning.short_run_kwargs(1) == {}  # no epoch left to re-learn in
    assert relearning.short_run_kwargs(20) == {"reinit_epoch": 6, "reinit_num": 2}
    assert balancer_class("cggm").short_run_kwargs(20) == {}
