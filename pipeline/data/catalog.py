"""The dataset catalog: name → files, payload checksums, sources in order, and a reader.

A source is either a local directory (a mirror, such as the one Debian's `dataset-fashion-mnist`
installs) or an HTTP(S) base URL; the download stage tries them in order and keeps the first file
whose *decompressed* payload has the pinned SHA-256 (mirrors may recompress, as Debian does).

Adding a dataset is adding an entry to `CATALOG`. Each entry has a `kind` (how its rows look:
`images`, `tabular`, or `image_files` — images on disk listed in a label table) and a `task`
(what is learned from them: `classification`, `regression` or `multilabel`); experiments are
checked against the task before anything runs.

Multi-label sets have one 0/1 column per label: `garments` is rendered deterministically from
the Fashion-MNIST files by the preprocess stage, as arrays like the other image sets; `apparel`
is a copy of the real Kaggle set that the user points `data.mirrors` at, image files listed in a
CSV (the seed's layout), which stay files and are streamed from disk.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError


@dataclass(frozen=True)
class Arrays:
    """What a reader returns.

    Images: uint8 (N, H, W[, C]) and integer labels. Tabular: float32 (N, features) and, for
    regression, float32 targets.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass(frozen=True)
class FileSpec:
    name: str
    sha256: str  # of the decompressed payload (the file itself when it is not `.gz`)
    size: int | None = None  # decompressed bytes, when known; bounds HTTP downloads


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str
    files: tuple[FileSpec, ...]
    sources: tuple[str, ...]
    reader: Callable[[Path], Arrays]
    class_names: tuple[str, ...] = ()
    value_max: int = 255
    how_to_get: str = ""
    task: str = "classification"  # or "regression", "multilabel"
    feature_names: tuple[str, ...] = ()
    target_name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- readers ------------------------------------------------------------------------------------


def open_payload(path: Path):
    """Open a file for reading its payload, transparently decompressing `.gz`."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (unsigned-byte data, the MNIST family's format) into a uint8 array."""
    try:
        with open_payload(path) as stream:
            payload = stream.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX payload ({exc}).") from None
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number).")
    dtype_code, ndim = payload[2], payload[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX data type 0x{dtype_code:02x} unsupported (need 0x08).")
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(payload) - header_end != expected:
        raise DataError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(payload) - header_end} bytes; the file is truncated or corrupt."
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header_end).reshape(shape)


def read_idx_dataset(directory: Path) -> Arrays:
    """The four-file layout shared by MNIST and Fashion-MNIST."""
    return Arrays(
        x_train=read_idx(directory / "train-images-idx3-ubyte.gz"),
        y_train=read_idx(directory / "train-labels-idx1-ubyte.gz"),
        x_test=read_idx(directory / "t10k-images-idx3-ubyte.gz"),
        y_test=read_idx(directory / "t10k-labels-idx1-ubyte.gz"),
    )


def read_digits_csv(directory: Path) -> Arrays:
    """scikit-learn's bundled `digits.csv.gz`: 64 pixel columns (0–16) and a label; no test set."""
    path = directory / "digits.csv.gz"
    try:
        with open_payload(path) as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: cannot read digits CSV ({exc}).") from None
    images = table[:, :-1].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, -1].astype(np.uint8)
    return Arrays(x_train=images, y_train=labels)


def read_diabetes(directory: Path) -> Arrays:
    """scikit-learn's bundled diabetes set: 442 rows, 10 raw (unscaled) features; no test set."""
    try:
        with open_payload(directory / "diabetes_data_raw.csv.gz") as stream:
            features = np.loadtxt(stream, dtype=np.float64)
        with open_payload(directory / "diabetes_target.csv.gz") as stream:
            target = np.loadtxt(stream, dtype=np.float64)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{directory}: cannot read the diabetes CSV files ({exc}).") from None
    return Arrays(x_train=features.astype(np.float32), y_train=target.astype(np.float32))


def read_boston_housing(directory: Path) -> Arrays:
    """Keras' `boston_housing.npz`, split as `keras.datasets.boston_housing.load_data` does.

    The rows are shuffled with `np.random.RandomState(seed)` and the last `test_split` of them
    held out, with the seed tutorial's `test_split=0.2, seed=777`: 404 training, 102 test rows.
    """
    path = directory / "boston_housing.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the Boston housing archive ({exc}).") from None
    extra = BOSTON_HOUSING.extra
    indices = np.arange(len(x))
    np.random.RandomState(extra["seed"]).shuffle(indices)
    x, y = x[indices].astype(np.float32), y[indices].astype(np.float32)
    cut = int(len(x) * (1 - extra["test_split"]))
    return Arrays(x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])


def _sklearn_data_dir() -> str:
    """scikit-learn's bundled data directory, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return "sklearn-not-installed"
    return str(Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data")


# --- the catalog --------------------------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    kind="images",
    files=(
        FileSpec(
            IDX_FILES[0],
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            size=47_040_016,
        ),
        FileSpec(
            IDX_FILES[1],
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            size=60_008,
        ),
        FileSpec(
            IDX_FILES[2],
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            size=7_840_016,
        ),
        FileSpec(
            IDX_FILES[3],
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            size=10_008,
        ),
    ),
    sources=(
        "/usr/share/datasets/fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    reader=read_idx_dataset,
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    how_to_get="install Debian's package: `apt-get install dataset-fashion-mnist`",
)

MNIST = DatasetSpec(
    name="mnist",
    kind="images",
    files=(
        FileSpec(
            IDX_FILES[0],
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            size=47_040_016,
        ),
        FileSpec(
            IDX_FILES[1],
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            size=60_008,
        ),
        FileSpec(
            IDX_FILES[2],
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            size=7_840_016,
        ),
        FileSpec(
            IDX_FILES[3],
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            size=10_008,
        ),
    ),
    sources=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    reader=read_idx_dataset,
    class_names=tuple(str(digit) for digit in range(10)),
    how_to_get=(
        "copy the four MNIST IDX files into a directory and list it in params.yaml `data.mirrors`"
    ),
)

DIGITS = DatasetSpec(
    name="digits",
    kind="images",
    files=(
        FileSpec(
            "digits.csv.gz",
            "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8",
            size=264_712,
        ),
    ),
    sources=(_sklearn_data_dir(),),
    reader=read_digits_csv,
    class_names=tuple(str(digit) for digit in range(10)),
    value_max=16,
    how_to_get="install scikit-learn, which bundles it (`make venv`)",
)

DIABETES = DatasetSpec(
    name="diabetes",
    kind="tabular",
    task="regression",
    files=(
        FileSpec(
            "diabetes_data_raw.csv.gz",
            "86badf50b4f9436ddd1e497dc0ae1b93166f8120221ee7dca4634fe849f3be7c",
            size=19_596,
        ),
        FileSpec(
            "diabetes_target.csv.gz",
            "244713a551f62a291a354212d8a048adec6cb1244b2bc44e66a0698f5006d26d",
            size=11_050,
        ),
    ),
    sources=(_sklearn_data_dir(),),
    reader=read_diabetes,
    feature_names=("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"),
    target_name="disease progression after one year",
    how_to_get="install scikit-learn, which bundles it (`make venv`)",
)

BOSTON_HOUSING = DatasetSpec(
    name="boston_housing",
    kind="tabular",
    task="regression",
    files=(
        FileSpec(
            "boston_housing.npz",
            "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5",
            size=57_026,
        ),
    ),
    sources=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",),
    reader=read_boston_housing,
    feature_names=(
        "CRIM",
        "ZN",
        "INDUS",
        "CHAS",
        "NOX",
        "RM",
        "AGE",
        "DIS",
        "RAD",
        "TAX",
        "PTRATIO",
        "B",
        "LSTAT",
    ),
    target_name="median home value ($1000)",
    how_to_get=(
        "download boston_housing.npz (Keras' copy) into a directory and list it in params.yaml "
        "`data.mirrors`"
    ),
    extra={
        "test_split": 0.2,
        "seed": 777,
        "test_source": "Keras' split: last 20% of the rows shuffled with seed 777",
    },
)


def read_nothing(directory: Path) -> Arrays:
    raise DataError(f"{directory}: image-file datasets are read by the preprocess stage.")


# The seed's apparel labels: six colours, then five items.
APPAREL_LABELS = (
    "black",
    "blue",
    "brown",
    "green",
    "red",
    "white",
    "dress",
    "shirt",
    "pants",
    "shorts",
    "shoes",
)

GARMENTS = DatasetSpec(
    name="garments",
    kind="images",
    task="multilabel",
    files=FASHION_MNIST.files,
    sources=FASHION_MNIST.sources,
    reader=read_nothing,
    class_names=APPAREL_LABELS,
    how_to_get=FASHION_MNIST.how_to_get + " (garments are generated from Fashion-MNIST)",
    # Rendered by the preprocess stage (pipeline.data.garments) from the Fashion-MNIST files.
    extra={"n_train": 6000, "n_test": 1000, "image_size": 28, "generator": "garments"},
)

APPAREL = DatasetSpec(
    name="apparel",
    kind="image_files",
    task="multilabel",
    files=(),  # whatever labels.csv lists; no checksum can be pinned for a user's copy
    sources=(),
    reader=read_nothing,
    class_names=APPAREL_LABELS,
    how_to_get=(
        "download the Kaggle apparel images, write labels.csv (image,black,blue,brown,green,red,"
        "white,dress,shirt,pants,shorts,shoes; image paths relative to the CSV) next to them, "
        "and list that directory in params.yaml `data.mirrors`"
    ),
    extra={"image_size": 112, "label_csv": "labels.csv"},
)

CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (FASHION_MNIST, MNIST, DIGITS, DIABETES, BOSTON_HOUSING, GARMENTS, APPAREL)
}
TASKS = ("classification", "regression", "multilabel")


def get_dataset(name: str) -> DatasetSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise DataError(
            f"Unknown dataset {name!r}; the catalog has {', '.join(sorted(CATALOG))}. "
            "Add an entry to pipeline/data/catalog.py CATALOG to use another."
        ) from None
