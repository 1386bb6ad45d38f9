"""One module per section of the benchmark report: balancers, inference, inference_settings (a sweep of CPU
inference settings with a trained model, asked for by name), data pipeline,
step_scaling (step time against patch size and modalities), variants, dataset_scale (memory of a run against
the number of full-size cases, loader speed, cache build).

Each section is a function of the run's :class:`~brats_cggm.benchmarking.config.BenchmarkConfig` (and a
scratch folder where it writes data) returning its JSON entry.
"""

from brats_cggm.benchmarking.sections.balancers import balancer_benchmark
from brats_cggm.benchmarking.sections.data import data_pipeline_benchmark
from brats_cggm.benchmarking.sections.inference import inference_benchmark
from brats_cggm.benchmarking.sections.inference_settings import inference_settings_benchmark
from brats_cggm.benchmarking.sections.step_scaling import step_scaling_benchmark
from brats_cggm.benchmarking.sections.variants import variants_benchmark

__all__ = [
    "balancer_benchmark",
    "data_pipeline_benchmark",
    "inference_benchmark",
    "inference_settings_benchmark",
    "step_scaling_benchmark",
    "variants_benchmark",
]
