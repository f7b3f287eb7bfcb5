"""Built-in data: synthetic sets generated from a seed, class-incremental splits, real images
that ship inside installed packages, and a folder loader. Every loader returns a
:class:`SegDataset` (images in ``[0, 1]``, masks of class ids)."""

from segxai.data.catalog import DATASETS, load_dataset
from segxai.data.dataset import SegDataset
from segxai.data.folder import load_folder
from segxai.data.incremental import (
    IncrementalTask,
    incremental_tasks,
    make_class_order,
    parse_tasks,
    shapes_incremental,
)
from segxai.data.real import (
    BRAIN_CLASSES,
    NUCLEI_CLASSES,
    PHOTOGRAPHS,
    Photographs,
    find_package_file,
    load_brain,
    load_nuclei,
    load_photographs,
)
from segxai.data.synthetic import (
    CUE_COLOURS,
    SHAPES_CLASSES,
    ContextBiasDataset,
    make_context_bias,
    make_shapes,
)
from segxai.data.textured import TEXTURED_CLASSES, make_textured_shapes

__all__ = [
    "BRAIN_CLASSES",
    "DATASETS",
    "NUCLEI_CLASSES",
    "PHOTOGRAPHS",
    "CUE_COLOURS",
    "SHAPES_CLASSES",
    "TEXTURED_CLASSES",
    "ContextBiasDataset",
    "IncrementalTask",
    "Photographs",
    "SegDataset",
    "find_package_file",
    "incremental_tasks",
    "load_brain",
    "load_dataset",
    "load_folder",
    "load_nuclei",
    "load_photographs",
    "make_class_order",
    "make_context_bias",
    "make_shapes",
    "make_textured_shapes",
    "parse_tasks",
    "shapes_incremental",
]
