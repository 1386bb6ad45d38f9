"""A MONAI SupervisedTrainer whose iteration runs auxiliary heads and a balancer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.optim import Optimizer

from brats_cggm.core.availability import select_rows
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean, unwrap
from brats_cggm.core.modules import forward_features, module_list
from brats_cggm.core.outputs import MultimodalOutput
from brats_cggm.core.task import Task
from brats_cggm.engine.modality_dropout import ModalityDropout

__all__ = ["BalancedTrainer"]


def _plain(tensor: Any) -> Any:
    # MetaTensor's per-op metadata tracking costs time on the hot path and nothing here needs it
    return tensor.as_subclass(torch.Tensor) if isinstance(tensor, torch.Tensor) else tensor


def _detach(features: Any) -> Any:
    if features is None:
        return None
    if isinstance(features, torch.Tensor):
        return features.detach()
    return type(features)(_detach(f) for f in features)


class BalancedTrainer(SupervisedTrainer):
    """Trains a multimodal network, its auxiliary per-modality heads and a balancer, one step at a time.

    One iteration: the step's availability mask (``modality_dropout``), forward (``network.forward_features``
    with that mask and the balancer's fusion mask), task loss, auxiliary heads on the encoder features
    of the samples that have each modality (detached unless the balancer says otherwise), their losses and
    utilization ε (all-reduced over ranks), the balancer's extra loss, one backward of
    everything, the balancer's gradient edits, gradient clipping, then the network's and the heads'
    optimizer steps. A NaN or infinite loss (on any rank) stops training with a ``FloatingPointError``
    naming the epoch and the iteration, before the step that would spread it into the weights. The
    standard MONAI iteration events fire, so MONAI handlers work unchanged.

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (fused logits), ``loss`` (the total),
    ``task_loss``, ``aux_loss`` (mean over heads), ``utilization`` (ε per modality), ``grad_norm``
    (encoder gradient norm per modality after modulation), ``balancer`` (its scalars) and
    ``modality_dropout`` (how often each modality was dropped), all detached.

    Args:
        device: the device to train on.
        max_epochs: number of epochs.
        train_data_loader: the training data loader.
        network: the multimodal network (``forward_features``, ``encoders``, ``output_layer``), possibly
            wrapped by DDP.
        optimizer: the network's optimizer.
        task: the task (loss, auxiliary targets, utilization).
        balancer: the balancing strategy.
        aux_heads: the auxiliary heads (one per modality), a module separate from the network.
        aux_optimizer: the heads' own optimizer.
        grad_clip: max gradient norm of the network's parameters, applied after the balancer's edits;
            None disables clipping.
        modality_dropout: missing-modality training (:class:`~brats_cggm.engine.modality_dropout.ModalityDropout`);
            None or ``p=0`` trains every step with every modality.
        kwargs: the remaining arguments of :class:`monai.engines.SupervisedTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        task: Task,
        balancer: Balancer,
        aux_heads: nn.Module,
        aux_optimizer: Optimizer,
        grad_clip: float | None = None,
        modality_dropout: ModalityDropout | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=task.loss,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            train_handlers=train_handlers,
            amp=amp,
            amp_kwargs=amp_kwargs,
            decollate=False,
            **kwargs,
        )
        self.task = task
        self.balancer = balancer
        self.aux_heads = aux_heads
        self.aux_optimizer = aux_optimizer
        self.grad_clip = grad_clip
        self.modality_dropout = modality_dropout
        balancer.attach(self)
        self.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: balancer.epoch_completed(engine.state.epoch))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.scaler is not None:
            return torch.autocast("cuda", **self.amp_kwargs)
        return contextlib.nullcontext()

    def _forward_features(
        self, inputs: Any, available: torch.Tensor | None, fusion_mask: torch.Tensor | None
    ) -> MultimodalOutput:
        # only the masks in use are passed, so a network without masks trains as long as none is needed
        kwargs = {k: v for k, v in (("available", available), ("fusion_mask", fusion_mask)) if v is not None}
        if hasattr(self.network, "forward_features"):
            return forward_features(self.network, inputs, **kwargs)
        # a DDP (or compile) wrapper must go through its own forward; see engine.distributed
        return self.network(inputs, **kwargs)

    def _availability(self, batch_size: int, epoch: int) -> torch.Tensor | None:
        dropout = self.modality_dropout
        if dropout is None or not dropout.is_active(epoch):
            return None
        return dropout.draw(batch_size).to(self.state.device)

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, Any]) -> dict:
        if not isinstance(engine, BalancedTrainer):
            raise TypeError(f"BalancedTrainer._iteration runs a BalancedTrainer, not {type(engine).__name__}")
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = _plain(batch[0]), _plain(batch[1])
        network = unwrap(engine.network)
        engine.network.train()
        engine.aux_heads.train()
        engine.optimizer.zero_grad(set_to_none=True)
        engine.aux_optimizer.zero_grad(set_to_none=True)
        balancer, task = engine.balancer, engine.task

        batch_size = int(targets.shape[0])
        available = engine._availability(batch_size, engine.state.epoch)
        fusion_mask = balancer.fusion_mask(engine.state.epoch, batch_size)
        with engine._autocast():
            output = engine._forward_features(inputs, available, fusion_mask)
            engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets, Keys.PRED: output.logits.detach()}
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            # OPM's all_dropped="exclude": a sample its drop left without a modality is not in the fused loss
            excluding = fusion_mask if balancer.exclude_unfused else None
            task_loss = _fused_loss(task, output.logits, targets, excluding, available)
            features = _detach(output.features) if balancer.detach_aux_features else output.features
            aux = _auxiliary_step(engine.aux_heads, task, features, targets, output.available)
            aux_logits, aux_targets, aux_losses, utilization, present = aux
            if engine.modality_dropout is not None:
                utilization = engine.modality_dropout.carry_utilization(utilization)
            ctx = StepContext(
                network=network,
                heads=_module_list(unwrap(engine.aux_heads)),
                task=task,
                inputs=inputs,
                targets=targets,
                output=output,
                task_loss=task_loss,
                aux_logits=aux_logits,
                aux_targets=aux_targets,
                aux_losses=aux_losses,
                utilization=utilization,
                epoch=engine.state.epoch,
                iteration=engine.state.iteration,
                present=present,
            )
            extra = balancer.extra_loss(ctx)
            loss = task_loss + torch.stack(aux_losses).sum()
            if extra is not None:
                loss = loss + extra
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        _stop_on_non_finite(loss, engine.state.epoch, engine.state.iteration)

        scaler = engine.scaler if engine.amp else None
        balancer.backward(ctx, scaler.scale(loss) if scaler is not None else loss)
        if scaler is not None:
            scaler.unscale_(engine.optimizer)
            scaler.unscale_(engine.aux_optimizer)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        balancer.after_backward(ctx)
        grad_norm = _encoder_grad_norms(network)
        if engine.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), engine.grad_clip)
        if scaler is not None:
            scaler.step(engine.optimizer)
            scaler.step(engine.aux_optimizer)
            scaler.update()
        else:
            engine.optimizer.step()
            engine.aux_optimizer.step()

        engine.state.output.update(
            {
                Keys.LOSS: loss.detach(),
                "task_loss": task_loss.detach(),
                "aux_loss": torch.stack(aux_losses).detach().mean(),
                "utilization": ctx.utilization.detach(),
                "grad_norm": grad_norm,
                "balancer": dict(balancer.scalars()),
                "modality_dropout": engine.modality_dropout.scalars() if engine.modality_dropout is not None else {},
            }
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _auxiliary_step(
    heads: nn.Module, task: Task, features: list, targets: torch.Tensor, available: torch.Tensor | None
) -> tuple[list[torch.Tensor | None], torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The auxiliary heads' predictions, targets, losses and ε, each head on the samples that have its modality.

    Returns:
        ``(aux_logits, aux_targets, aux_losses, utilization, present)``: logits per modality (None where
        no sample has it), the targets of the whole batch at the heads' resolution, one loss per head (a
        constant 0 where the head did not run), ε per modality averaged over the ranks that saw it (NaN
        where none did) and, per modality, whether its head ran on this rank.
    """
    num = len(features)
    rows: list[torch.Tensor | None] = [None if available is None else available[:, i] for i in range(num)]
    selected = [_present_rows(f, r) for f, r in zip(features, rows, strict=True)]
    aux_logits = list(heads(selected))
    reference = next(lg for lg in aux_logits if lg is not None)
    # matched to the heads' resolution; the batch size plays no part
    aux_targets = task.aux_targets(targets, reference)
    device = reference.device
    present = torch.tensor([lg is not None for lg in aux_logits], device=device)
    aux_losses: list[torch.Tensor] = []
    scores = torch.zeros(num, device=device)
    for i, logits in enumerate(aux_logits):
        if logits is None:
            aux_losses.append(torch.zeros((), device=device))
            continue
        row_mask = rows[i]
        target = aux_targets if row_mask is None or bool(row_mask.all()) else select_rows(aux_targets, row_mask)
        aux_losses.append(task.loss(logits, target))
        with torch.no_grad():
            scores[i] = task.utilization(logits.float(), target)
    # ε averaged over the ranks that saw each modality: NaN where none did
    totals = all_reduce_mean(torch.stack([scores * present, present.float()]))
    utilization = torch.where(totals[1] > 0, totals[0] / totals[1].clamp_min(1e-12), float("nan"))
    return aux_logits, aux_targets, aux_losses, utilization.float(), present


def _fused_loss(
    task: Task,
    logits: torch.Tensor,
    targets: torch.Tensor,
    fusion_mask: torch.Tensor | None,
    available: torch.Tensor | None,
) -> torch.Tensor:
    """The fused prediction's task loss, over the samples that fused at least one modality of the fusion mask.

    Args:
        task: the task (``loss``).
        logits: the fused logits ``(B, ...)``.
        targets: the targets ``(B, ...)``.
        fusion_mask: the balancer's fusion mask ``(B, M)`` when it excludes the samples it leaves without a
            modality (:attr:`Balancer.exclude_unfused`), else None (every sample counts).
        available: the step's availability mask ``(B, M)`` (None: every modality).

    Returns:
        The loss; where no sample fused a modality, a zero that keeps the graph (the step trains the heads only).
    """
    if fusion_mask is None:
        return task.loss(logits, targets)
    fused = fusion_mask.to(logits.device)
    if available is not None:
        fused = fused & available.to(logits.device)
    rows = fused.any(1)
    if bool(rows.all()):
        return task.loss(logits, targets)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    return task.loss(select_rows(logits, rows), select_rows(targets, rows))


def _present_rows(features: Any, rows: torch.Tensor | None) -> Any:
    """A modality's features for the samples that have it; None when none has it."""
    if features is None or rows is None:
        return features
    if not bool(rows.any()):
        return None
    return features if bool(rows.all()) else select_rows(features, rows)


@torch.no_grad()
def _stop_on_non_finite(loss: torch.Tensor, epoch: int, iteration: int) -> None:
    """Raise before the step when the loss of any rank is NaN or infinite (every rank raises)."""
    finite = all_reduce_mean(torch.isfinite(loss.detach()).float())
    if float(finite) < 1.0:
        raise FloatingPointError(
            f"non-finite training loss at epoch {epoch}, iteration {iteration} (this rank: {float(loss)}): "
            "training stopped before the optimizer step; the checkpoints and model written so far stay"
        )


def _module_list(heads: nn.Module) -> nn.ModuleList:
    if not isinstance(heads, nn.ModuleList):
        raise TypeError(f"the auxiliary heads are a {type(heads).__name__}, expected a ModuleList (one per modality)")
    return heads


@torch.no_grad()
def _encoder_grad_norms(network: nn.Module) -> torch.Tensor:
    norms = []
    for encoder in module_list(network, "encoders"):
        grads = [p.grad for p in encoder.parameters() if p.grad is not None]
        if grads:
            norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        else:
            norms.append(torch.zeros((), device=next(network.parameters()).device))
    return torch.stack(norms)
