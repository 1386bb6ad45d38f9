"""One BalancedTrainer iteration: the order of the balancer hooks, MONAI events and optimizer steps; its outputs."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.engine.modality_dropout import ModalityDropout
from tests.helpers.tiny_setup import MODALITIES, make_batches, make_trainer

#: The constant the recording balancer adds to the loss.
EXTRA = 0.25


class RecordingBalancer(Balancer):
    """Plain joint training that records when each hook runs (in ``events``) and what it was given."""

    name = "recording"

    def __init__(self, events: list[str], scale: float = 1.0, zero_modality: int | None = None) -> None:
        super().__init__(MODALITIES)
        self.events = events
        self.scale = scale
        self.zero_modality = zero_modality
        self.ctx: StepContext | None = None
        self.norms_after_edits: torch.Tensor | None = None

    def fusion_mask(self, epoch: int, batch_size: int):
        self.events.append("fusion_mask")
        return None

    def extra_loss(self, ctx: StepContext) -> torch.Tensor:
        self.events.append("extra_loss")
        self.ctx = ctx
        return torch.tensor(EXTRA)

    def backward(self, ctx: StepContext, loss: torch.Tensor) -> None:
        self.events.append("backward")
        super().backward(ctx, loss)

    def after_backward(self, ctx: StepContext) -> None:
        self.events.append("after_backward")
        for p in ctx.network.parameters():
            if p.grad is not None:
                p.grad.mul_(self.scale)
        if self.zero_modality is not None:
            for p in ctx.network.encoders[self.zero_modality].parameters():
                if p.grad is not None:
                    p.grad.zero_()
        self.norms_after_edits = torch.stack(
            [
                torch.linalg.vector_norm(
                    torch.cat(
                        [p.grad.flatten() for p in encoder.parameters() if p.grad is not None] or [torch.zeros(1)]
                    )
                )
                for encoder in ctx.network.encoders
            ]
        )
        self._scalars = {"recording/calls": float(ctx.iteration)}

    def epoch_completed(self, epoch: int) -> None:
        self.events.append(f"epoch_completed({epoch})")


def _with_grad(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.grad is not None]


def _recorded_trainer(events: list[str], n_batches: int = 1, **kwargs):
    """A tiny trainer whose MONAI events, optimizer steps and balancer hooks append to ``events``."""
    balancer = RecordingBalancer(events, **kwargs.pop("balancer_kwargs", {}))
    trainer = make_trainer(balancer, make_batches(n_batches, side=16), **kwargs)
    for event in (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ):
        trainer.add_event_handler(event, lambda engine, name=event.name: events.append(name))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: events.append("ITERATION_COMPLETED"))
    trainer.optimizer.register_step_pre_hook(lambda *args: events.append("optimizer.step"))
    trainer.aux_optimizer.register_step_pre_hook(lambda *args: events.append("aux_optimizer.step"))
    return trainer, balancer


ONE_ITERATION = [
    "fusion_mask",
    "FORWARD_COMPLETED",
    "extra_loss",
    "LOSS_COMPLETED",
    "backward",
    "BACKWARD_COMPLETED",
    "after_backward",
    "clip",
    "optimizer.step",
    "aux_optimizer.step",
    "MODEL_COMPLETED",
    "ITERATION_COMPLETED",
]


def test_one_iteration_runs_hooks_events_and_steps_in_order(monkeypatch):
    events: list[str] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*args, **kwargs):
        events.append("clip")
        return clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    trainer, _ = _recorded_trainer(events, n_batches=2, grad_clip=10.0)
    trainer.run()
    assert events == ONE_ITERATION + ONE_ITERATION + ["epoch_completed(1)"]


def test_no_clipping_without_grad_clip(monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: events.append("clip"))
    trainer, _ = _recorded_trainer(events)
    trainer.run()
    assert "clip" not in events


def test_output_after_forward_holds_the_batch_and_the_prediction():
    seen = {}
    trainer, _ = _recorded_trainer([])
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda engine: seen.update(keys=set(engine.state.output))
    )
    trainer.run()
    assert seen["keys"] == {"image", "label", "pred"}


def test_output_keys_shapes_and_values():
    trainer, balancer = _recorded_trainer([], balancer_kwargs={"zero_modality": 1})
    trainer.run()
    out, ctx = trainer.state.output, balancer.ctx
    batch = make_batches(1, side=16)[0]
    assert set(out) == {
        "image", "label", "pred", "loss", "task_loss", "aux_loss", "utilization", "grad_norm", "balancer",
        "modality_dropout",
    }  # fmt: skip
    torch.testing.assert_close(out["image"], batch["image"])
    torch.testing.assert_close(out["label"], batch["label"])
    assert out["pred"].shape == (2, 3, 16, 16, 16)
    for key in ("loss", "task_loss", "aux_loss"):
        assert out[key].shape == () and not out[key].requires_grad
    assert out["utilization"].shape == (len(MODALITIES),) and out["grad_norm"].shape == (len(MODALITIES),)
    assert not out["utilization"].requires_grad and not out["grad_norm"].requires_grad

    # loss = task + the sum of the auxiliary losses + the balancer's extra; aux_loss is their mean
    aux_losses = torch.stack([loss.detach() for loss in ctx.aux_losses])
    assert len(ctx.aux_losses) == len(MODALITIES)
    torch.testing.assert_close(out["aux_loss"], aux_losses.mean())
    torch.testing.assert_close(out["task_loss"], ctx.task_loss.detach())
    torch.testing.assert_close(out["loss"], ctx.task_loss.detach() + aux_losses.sum() + EXTRA)
    torch.testing.assert_close(out["task_loss"], ctx.task.loss(ctx.output.logits, ctx.targets).detach())

    # ε per modality: the task's utilization of each head against the down-sampled targets
    expected = torch.stack([ctx.task.utilization(lg.detach(), ctx.aux_targets) for lg in ctx.aux_logits])
    torch.testing.assert_close(out["utilization"], expected)
    assert ctx.aux_targets.shape[2:] == ctx.aux_logits[0].shape[2:]

    # the encoder gradient norms after the balancer's edits (modality 1's gradients zeroed)
    torch.testing.assert_close(out["grad_norm"], balancer.norms_after_edits)
    assert out["grad_norm"][1] == 0 and bool((out["grad_norm"][[0, 2, 3]] > 0).all())
    assert out["balancer"] == {"recording/calls": 1.0}
    assert ctx.epoch == 1 and ctx.iteration == 1


def test_output_prediction_is_detached():
    trainer, _ = _recorded_trainer([])
    trainer.run()
    assert not trainer.state.output["pred"].requires_grad


@pytest.mark.parametrize("detach", [True, False])
def test_auxiliary_heads_see_detached_features_unless_the_balancer_says_otherwise(detach):
    trainer, balancer = _recorded_trainer([])
    balancer.detach_aux_features = detach
    seen = []
    trainer.aux_heads.register_forward_pre_hook(
        lambda module, args: seen.extend(f.requires_grad for per_modality in args[0] for f in per_modality)
    )
    trainer.run()
    assert seen and all(requires_grad is not detach for requires_grad in seen)


def _network_grad_norm_at_step(trainer) -> list[float]:
    norms = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: norms.append(
            float(torch.nn.utils.get_total_norm([p.grad for p in trainer.network.parameters() if p.grad is not None]))
        )
    )
    return norms


def test_clipping_applies_after_the_balancers_gradient_edits():
    trainer, _ = _recorded_trainer([], grad_clip=1.0, balancer_kwargs={"scale": 1e6})
    norms = _network_grad_norm_at_step(trainer)
    trainer.run()
    assert norms and norms[0] <= 1.0 + 1e-4
    # grad_norm reports the balancer's (scaled) gradients, before clipping
    assert float(trainer.state.output["grad_norm"].max()) > 1.0


def test_without_clipping_the_edited_gradients_reach_the_optimizer():
    trainer, _ = _recorded_trainer([], balancer_kwargs={"scale": 1e6})
    norms = _network_grad_norm_at_step(trainer)
    trainer.run()
    assert norms[0] > 1e3


class _FixedDropout(ModalityDropout):
    """Missing-modality training with a given mask per step, so the test knows what was absent."""

    def __init__(self, masks: list[torch.Tensor]) -> None:
        super().__init__(MODALITIES, p=0.5)
        self.masks = list(masks)

    def sample(self, batch_size: int) -> torch.Tensor:
        return self.masks.pop(0)


def test_absent_modalities_get_no_head_no_loss_no_gradient_and_keep_their_last_utilization():
    partly = torch.tensor([[True, True, True, True], [True, False, True, True]])
    absent = torch.tensor([[True, False, True, False], [True, False, False, True]])
    dropout = _FixedDropout([partly, absent])
    balancer = RecordingBalancer([])
    trainer = make_trainer(balancer, make_batches(2, side=16), modality_dropout=dropout)
    seen: list[dict] = []

    def record(engine) -> None:
        ctx = balancer.ctx
        assert ctx is not None
        seen.append(
            {
                "present": ctx.present.tolist(),
                "rows": [None if lg is None else lg.shape[0] for lg in ctx.aux_logits],
                "losses": [float(loss.detach()) for loss in ctx.aux_losses],
                "grad": [lg is not None and lg.requires_grad for lg in ctx.aux_logits],
                "utilization": ctx.utilization.clone(),
                "encoder_grads": [any(p.grad is not None for p in e.parameters()) for e in ctx.network.encoders],
            }
        )

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, record)
    trainer.run()
    first, second = seen
    assert first["present"] == [True, True, True, True] and first["rows"] == [2, 1, 2, 2]
    assert second["present"] == [True, False, True, True] and second["rows"] == [2, None, 1, 1]
    assert second["losses"][1] == 0.0 and not second["grad"][1]
    assert second["encoder_grads"] == [True, False, True, True]
    # t1ce was absent from the whole second step: its ε is the first step's
    assert float(second["utilization"][1]) == float(first["utilization"][1])
    assert torch.isfinite(second["utilization"]).all()
    rates = trainer.state.output["modality_dropout"]
    assert rates["modality_dropout/step/t1ce"] == 1.0 and rates["modality_dropout/run/t1ce"] == 0.75


class _DropFirstSample(RecordingBalancer):
    """Leaves the first sample of every batch without any modality in the fusion."""

    def fusion_mask(self, epoch: int, batch_size: int):
        mask = torch.ones(batch_size, len(MODALITIES), dtype=torch.bool)
        mask[0] = False
        return mask


@pytest.mark.parametrize("exclude", [False, True])
def test_a_sample_left_without_modalities_leaves_the_fused_loss_only_when_the_balancer_excludes_it(exclude):
    balancer = _DropFirstSample([])
    balancer.exclude_unfused = exclude
    batches = make_batches(1, side=16)
    trainer = make_trainer(balancer, batches)
    logits = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: logits.append(e.state.output["pred"]))
    trainer.run()
    label = batches[0]["label"]
    rows = slice(1, None) if exclude else slice(None)  # without exclusion, sample 0 fuses every modality
    expected = trainer.task.loss(logits[0][rows], label[rows])
    assert float(trainer.state.output["task_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_fused_loss_of_a_batch_without_any_fused_sample_is_a_zero_with_a_graph():
    from brats_cggm.engine.trainer import _fused_loss

    logits = torch.randn(2, 3, requires_grad=True)
    loss = _fused_loss(
        _MeanSquare(),
        logits,
        torch.zeros(2, 3),
        torch.zeros(2, 2, dtype=torch.bool),
        torch.ones(2, 2, dtype=torch.bool),
    )
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None and float(logits.grad.abs().sum()) == 0.0
    # a sample whose only kept modality is absent from the step is left out too
    only = _fused_loss(
        _MeanSquare(),
        torch.tensor([[1.0], [3.0]]),
        torch.zeros(2, 1),
        torch.tensor([[True, False], [True, True]]),
        torch.tensor([[False, True], [True, True]]),
    )
    assert float(only) == 9.0


class _MeanSquare:
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((logits - targets) ** 2).mean()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("joint", {}),
        ("cggm", {"direction": "grad"}),
        ("cggm", {"direction": "param", "s_min": 0.0, "clamp": False}),
        ("ogm_ge", {}),
        ("opm", {"warmup_epochs": 0}),
        ("mmpareto", {}),
    ],
    ids=["joint", "cggm-grad", "cggm-param", "ogm_ge", "opm", "mmpareto"],
)
def test_one_step_with_decoder_heads_trains_every_head_at_full_resolution(name: str, kwargs: dict):
    from brats_cggm.balancing.registry import create_balancer

    balancer = create_balancer(name, modalities=MODALITIES, **kwargs)
    contexts: list[StepContext] = []
    extra_loss = balancer.extra_loss
    balancer.extra_loss = lambda ctx: contexts.append(ctx) or extra_loss(ctx)  # type: ignore[method-assign]
    trainer = make_trainer(balancer, make_batches(1), aux_head="decoder")
    before = {k: v.clone() for k, v in trainer.aux_heads.state_dict().items()}
    trainer.run()
    (ctx,) = contexts
    # a full-resolution head is scored against the targets themselves (nothing down-sampled)
    assert all(lg is not None and lg.shape == ctx.targets.shape for lg in ctx.aux_logits)
    assert ctx.aux_targets.shape == ctx.targets.shape and torch.equal(ctx.aux_targets, ctx.targets)
    assert torch.isfinite(trainer.state.output["loss"]) and bool(
        ((ctx.utilization >= 0) & (ctx.utilization <= 1)).all()
    )
    for i in range(len(MODALITIES)):  # every head's last layer took a step
        key = f"{i}.output_layer.weight"
        assert not torch.equal(trainer.aux_heads.state_dict()[key], before[key]), key
