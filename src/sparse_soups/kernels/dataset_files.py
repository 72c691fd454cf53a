"""The official file layouts of datasets that are never downloaded (Celeb-A as torchvision
lays it out, WMT16 as plain parallel text), without torch: the config checks in Snakemake's
own process read these before any job starts."""

from __future__ import annotations

from pathlib import Path

FOLDER = "celeba"
IMAGES = "img_align_celeba"
TEXT_FILES = (
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def missing_files(root: Path) -> list[Path]:
    """The official files (and the image folder) that `root` lacks."""
    folder = Path(root) / FOLDER
    wanted = [folder / name for name in TEXT_FILES] + [folder / IMAGES]
    return [path for path in wanted if not path.exists()]


def partition_counts(root: Path) -> dict[int, int]:
    """Images per official split (0 train, 1 valid, 2 test), from list_eval_partition.txt."""
    counts = {0: 0, 1: 0, 2: 0}
    with open(Path(root) / FOLDER / "list_eval_partition.txt") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 2 and fields[1] in ("0", "1", "2"):
                counts[int(fields[1])] += 1
    return counts


# WMT16 German-English as plain parallel text, one sentence per line: the training corpus,
# newstest2015 (validation) and newstest2016 (the test set), as statmt and sacrebleu ship them.
WMT16_FILES = {
    "train": ("train.de", "train.en"),
    "val": ("newstest2015.de", "newstest2015.en"),
    "test": ("newstest2016.de", "newstest2016.en"),
}


def wmt16_missing_files(root: Path) -> list[Path]:
    return [
        Path(root) / name
        for pair in WMT16_FILES.values()
        for name in pair
        if not (Path(root) / name).is_file()
    ]


def line_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)
