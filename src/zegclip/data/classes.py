"""Class names, seen/unseen splits, label encodings and the VOC colour map (docs/method.md §9).

Data only: no I/O, no torch. Ids are the *reduced* ids the model predicts (VOC and
Context-59 without background, COCO-Stuff train ids).
"""

from __future__ import annotations

from dataclasses import dataclass

from zegclip.data.vocabularies.ade20k import ADE150_CLASSES, ADE847_CLASSES
from zegclip.data.vocabularies.pascal_context import PASCAL_CONTEXT_459_CLASSES
from zegclip.errors import ZegCLIPError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_UNSEEN: tuple[int, ...] = (15, 16, 17, 18, 19)

COCO_STUFF_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)
COCO_STUFF_UNSEEN: tuple[int, ...] = (
    19,
    23,
    28,
    29,
    36,
    51,
    76,
    88,
    94,
    112,
    133,
    136,
    137,
    157,
    160,
)
COCO_STUFF_MISSING_RAW: tuple[int, ...] = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
"""Raw stuff-map values (0..181) that never occur; train id = rank among the others."""

CONTEXT_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)
CONTEXT_FULL_IDS: tuple[int, ...] = (
    2,
    9,
    18,
    19,
    22,
    23,
    25,
    31,
    33,
    34,
    44,
    45,
    46,
    59,
    65,
    68,
    72,
    80,
    85,
    98,
    104,
    105,
    113,
    115,
    144,
    158,
    159,
    162,
    187,
    189,
    207,
    220,
    232,
    258,
    259,
    260,
    284,
    295,
    296,
    308,
    324,
    326,
    347,
    349,
    354,
    355,
    360,
    366,
    368,
    397,
    415,
    416,
    420,
    424,
    427,
    440,
    445,
    454,
    458,
)
"""Id in the 459-category full PASCAL-Context labels of each of the 59 classes."""
CONTEXT_UNSEEN: tuple[int, ...] = (0, 6, 7, 14, 19, 24, 31, 33, 48, 54)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the metrics need to know about a benchmark."""

    name: str
    class_names: tuple[str, ...]
    unseen_ids: tuple[int, ...]
    reduce_zero_label: bool
    """True when raw label 0 is background: 0 -> 255 and k -> k - 1 on reading."""
    ignore_index: int = 255
    """Label value of pixels never scored; 65535 (16-bit labels) for vocabularies above 255 classes."""
    eval_only: bool = False
    """A benchmark with no training split here (open-vocabulary evaluation of another dataset's model)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def seen_ids(self) -> tuple[int, ...]:
        unseen = set(self.unseen_ids)
        return tuple(i for i in range(self.num_classes) if i not in unseen)


DATASETS: dict[str, DatasetInfo] = {
    "voc": DatasetInfo("voc", VOC_CLASSES, VOC_UNSEEN, reduce_zero_label=True),
    "coco_stuff": DatasetInfo("coco_stuff", COCO_STUFF_CLASSES, COCO_STUFF_UNSEEN, reduce_zero_label=False),
    "context": DatasetInfo("context", CONTEXT_CLASSES, CONTEXT_UNSEEN, reduce_zero_label=True),
}


class DatasetChoiceError(ZegCLIPError, ValueError):
    """A setting that the chosen benchmark does not have (unseen classes by name, another ignore value)."""


FOLDER = "folder"
"""The dataset kind of your own images and masks (zegclip.data.folder): its classes are read
from ``<root>/classes.txt``, its unseen classes named by the user."""


SYNTHETIC_CLASSES: tuple[str, ...] = (
    "red stripes",
    "green checkerboard",
    "blue dots",
    "yellow grid",
    "magenta stripes",
    "cyan checkerboard",
)
"""Classes of the generated demo dataset (`zegclip.data.synthetic`), raw label k + 1."""
SYNTHETIC_UNSEEN: tuple[int, ...] = (4, 5)

DATASETS["context60"] = DatasetInfo("context60", ("background", *CONTEXT_CLASSES), (), reduce_zero_label=False)
"""Context with background as class 0: only for cross-dataset evaluation (docs/method.md §9)."""
DATASETS["synthetic"] = DatasetInfo("synthetic", SYNTHETIC_CLASSES, SYNTHETIC_UNSEEN, reduce_zero_label=True)
DATASETS["pc459"] = DatasetInfo(
    "pc459", PASCAL_CONTEXT_459_CLASSES, (), reduce_zero_label=False, ignore_index=65535, eval_only=True
)
"""PASCAL-Context, all 459 classes: 16-bit labels 0..458 with 65535 for unlabelled pixels (stored
reduced), open-vocabulary evaluation only (zegclip.data.vocabularies.pascal_context)."""
DATASETS["ade150"] = DatasetInfo("ade150", ADE150_CLASSES, (), reduce_zero_label=True)
"""ADE20K-150 (SceneParsing): raw 0 (other) ignored, 1..150 -> 0..149; open-vocabulary evaluation
(zegclip.data.vocabularies.ade20k). Its training split is prepared too, but no seen/unseen split."""
DATASETS["ade847"] = DatasetInfo(
    "ade847", ADE847_CLASSES, (), reduce_zero_label=False, ignore_index=65535, eval_only=True
)
"""ADE20K-847 (the full release's 847-class subset, validation only): 16-bit labels 0..846 with
65535 for pixels of no class among them (stored reduced; zegclip.data.vocabularies.ade20k)."""
