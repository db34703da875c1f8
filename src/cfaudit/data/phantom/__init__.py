"""The synthetic chest X-ray phantom: a data set whose hidden relations we planted, to prove the tool finds them.

``cfaudit phantom --out DIR`` (or :func:`generate_phantom`) writes frontal radiographs drawn from a latent
anatomy (lungs, heart, mediastinum, ribs, clavicles, diaphragm, body outline) with attribute cues (sex: thorax
and shoulder width, breast shadows; age: bone density, heart size, aortic knob; race: a faint texture grating;
view: AP magnifies the heart and shows the scapulae), findings with visual signatures, and support devices of
several kinds, together with metadata sampled from a real label table (CheXpert's, aggregated) and
relations planted by a declarative YAML config (:mod:`cfaudit.data.phantom.config`).

Ground truth (``DIR/ground_truth/``: per-image JSON and bit-packed masks, ``legend.json``, ``summary.csv``)
exists only to *score* the tool: nothing in training or discovery reads it. The metadata a model sees
(``DIR/metadata.csv``) holds exactly what a real data set would: devices appear only as "Support Devices".
"""

from cfaudit.data.phantom.anatomy import ANATOMY_PARAMETERS, Anatomy, SubjectIdentity
from cfaudit.data.phantom.config import (
    DEVICE_KINDS,
    PhantomConfig,
    Relation,
    default_config_path,
    load_config,
)
from cfaudit.data.phantom.generate import (
    GenerationResult,
    generate_phantom,
    read_provenance,
    stable_provenance,
)
from cfaudit.data.phantom.label_table import LabelTable, load_label_table
from cfaudit.data.phantom.measure import effusion_score, heart_width_ratio
from cfaudit.data.phantom.population import METADATA_COLUMNS
from cfaudit.data.phantom.render import MASK_BITS

__all__ = [
    "ANATOMY_PARAMETERS",
    "DEVICE_KINDS",
    "MASK_BITS",
    "METADATA_COLUMNS",
    "Anatomy",
    "GenerationResult",
    "LabelTable",
    "PhantomConfig",
    "Relation",
    "SubjectIdentity",
    "default_config_path",
    "effusion_score",
    "generate_phantom",
    "heart_width_ratio",
    "load_config",
    "load_label_table",
    "read_provenance",
    "stable_provenance",
]
