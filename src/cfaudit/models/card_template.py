"""The generated part of a model card: the markdown template and its filters, rendered from :class:`CardFacts`."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import yaml

from cfaudit import __version__
from cfaudit.models.card_facts import CardFacts


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True).strip()


def _inline(value: Any) -> str:
    """A config value on one line, spelled as in the YAML config (``true``, ``null``, lists as flow)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).strip()
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _cell(value: Any) -> str:
    """Text that stays inside one cell of a markdown table."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _number(value: Any) -> str:
    """A recorded float to 4 significant digits (as recorded otherwise)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)  # fmt: skip
_ENV.filters["yaml"] = _yaml
_ENV.filters["inline"] = _inline
_ENV.filters["number"] = _number
_ENV.filters["cell"] = _cell
_NOT_MEASURED = (
    "Not measured (no figure is recorded for this model; quote measured ones, with their source, in a "
    "`metrics.yaml` beside the weights or with `cfaudit models card MODEL --metrics FILE`)."
)
_TEMPLATE = _ENV.from_string("""\
# {{ f.title }}

{% if f.origin == "trained" %}
{{ f.architecture }}, trained by `cfaudit train` for {% if f.phases | length > 1 %}{{ f.phases | map(attribute="step") | join(" + ") }} steps in {{ f.phases | length }} phases{% else %}{{ f.unet_run.get("step") }} steps{% endif %}{% if f.data and f.data.rows %} on {{ f.data.rows }} images{% endif %}{% if f.data and f.data.split %} (split `{{ f.data.split }}`){% endif %}.
{% elif f.origin == "autoencoder" %}
{{ f.architecture }}. Only its autoencoder was trained here (`cfaudit models train-vae`, {{ f.vae_run.get("steps") }} steps); its UNet and text encoder are those of the folder it started from{% if f.started_from %} (`{{ f.started_from }}`){% endif %}.
{% elif f.origin == "random" %}
{{ f.architecture }}, with random weights (`cfaudit models init-random --arch {{ f.init.get("architecture") }} --seed {{ f.init.get("seed") }}{% if f.init.get("text_encoder", "clip") != "clip" %} --text-encoder {{ f.init.get("text_encoder") }}{% endif %}{% if f.init.get("vae_from") %} --vae {{ f.init.get("vae_from") }}{% endif %}`): the start of training, not a model that draws X-rays.
{% else %}
{{ f.architecture }}. This folder holds no cfaudit training record (`provenance.json`): where its weights come from is not recorded.
{% endif %}

| | |
|---|---|
| base model | {% if f.base_model %}[`{{ f.base_model }}`](https://huggingface.co/{{ f.base_model }}){% elif f.preset in ("tiny", "tiny-f4") %}none: the {{ f.preset }} preset has no pretrained weights; it starts from random ones{% else %}not recorded{% endif %} |
{% if f.started_from and f.origin == "trained" %}
| started from | `{{ f.started_from }}` |
{% endif %}
| license | `{{ f.license }}`{% if f.base_model and f.license == "other" %} (check the base model's license){% endif %} |
| text encoder | {{ f.text_encoder_text }} |
| written by | cfaudit {{ version }} |

## Training data

{% if f.data %}
{% for line in f.data.lines %}
- {{ line }}
{% endfor %}

### Table 1

{% if f.data.table1 %}
{{ f.data.table1_note }}, as `cfaudit data stats` makes it (percentages of each split's images):

{{ f.data.table1 }}
{% else %}
Not computed: {{ f.data.table1_note }}.
{% endif %}
{% elif f.origin == "random" %}
None: random weights are trained on nothing.
{% else %}
Not recorded.
{% endif %}

## Recipe

### Autoencoder

{% if f.vae_run %}
Trained by `cfaudit models train-vae`{% if f.vae_run.get("base_model") %} from `{{ f.vae_run.get("base_model") }}`{% endif %}: {{ f.vae_run.get("steps") }} steps, final loss {{ f.vae_run.get("final_loss") | number }}, latent scale {{ f.vae_run.get("scaling_factor") | number }}, {{ f.vae_run.get("seconds_this_call", f.vae_run.get("seconds")) }} s{% if (f.vae_run.get("config") or {}).get("index") %}; data `{{ f.vae_run.config.index }}`{% endif %}.

{% for key, value in f.vae_settings %}
- {{ key }}: {{ value | inline }}
{% endfor %}

<details><summary>the autoencoder's whole training config</summary>

```yaml
{{ f.vae_run.get("config", {}) | yaml }}
```

</details>
{% elif f.base_model %}
The base model's (`{{ f.base_model }}`), not trained here.
{% else %}
Not recorded.
{% endif %}

### UNet and text encoder

{% if f.origin == "trained" %}
{% if f.command %}
Command: `{{ f.command }}` (as recorded; the program shown as `cfaudit`).
{% else %}
Trained through cfaudit's Python API (`cfaudit.train.trainer.train`); no command line recorded.
{% endif %}

{% for run in f.phases %}
{% if f.phases | length > 1 %}
**Phase {{ loop.index }} of {{ f.phases | length }}**{% if not loop.first %}, from the model of phase {{ loop.index - 1 }}{% endif %}: {% endif %}{{ run.get("step") }} steps{% if run.get("wall_seconds") %}, {{ run.wall_seconds }} s in the last call{% endif %}; cfaudit {{ run.get("cfaudit_version") or "version not recorded" }}, torch {{ run.get("torch_version") or "version not recorded" }}.

{% for key, value in f.settings_of(run) %}
- {{ key }}: {{ value | inline }}
{% endfor %}

<details><summary>the whole training config{% if f.phases | length > 1 %} of phase {{ loop.index }}{% endif %}</summary>

```yaml
{{ run.config | yaml }}
```

</details>
{% endfor %}
{% elif f.origin == "random" %}
Random (seed {{ f.init.get("seed") }}){% if f.text_encoder == "minilm" %}; the text encoder is the frozen pretrained MiniLM{% endif %}.
{% elif f.origin == "autoencoder" %}
Not trained here: those of `{{ f.started_from or "the folder it started from" }}`.
{% else %}
Not recorded.
{% endif %}
{% if f.has_provenance_txt %}

The full record (files and their sizes, notes on how the weights were made) is in [PROVENANCE.txt](PROVENANCE.txt).
{% endif %}

## Measured figures

{% if f.figures.files %}
Quoted from {% for name in f.figures.files %}`{{ name }}`{{ ", " if not loop.last else "" }}{% endfor %}; each figure names where it was measured.

{% endif %}
{% for section, heading in (("reconstruction", "Reconstruction"), ("prompt_control", "Prompt control"), ("other", "Other")) %}
{% set entries = f.figures[section] %}
{% if entries or section != "other" %}
### {{ heading }}

{% if entries %}
| measure | value | setting | source |
|---|---|---|---|
{% for e in entries %}
| {{ e.measure | cell }} | {{ e.value | cell }} | {{ (e.setting or "-") | cell }} | {{ e.source | cell }} |
{% endfor %}
{% else %}
{{ not_measured }}
{% endif %}

{% endif %}
{% endfor %}
### Table 2

{% if f.figures.table2 %}
{% for t in f.figures.table2 %}
**{{ t.title }}**{% if t.setting %} ({{ t.setting }}){% endif %}. Source: {{ t.source }}.

| | {{ t.columns | map("cell") | join(" | ") }} |
|---|{% for c in t.columns %}---|{% endfor %}

{% for name, cells in t.rows %}
| {{ name | cell }} | {{ cells | map("cell") | join(" | ") }} |
{% endfor %}

{% endfor %}
{% else %}
{{ not_measured }}

{% endif %}
## Intended use

Research: auditing what a chest X-ray data set's images carry by editing them counterfactually (change one
attribute of an image, keep the rest) with cfaudit, and scoring and comparing those edits. **Not for diagnosis**,
treatment or any clinical decision, and not a source of training images for clinical models.

## Limits

- Its images are synthetic: edits and samples show what the model learned from its training data, including that
  data's biases and shortcuts; they are not evidence about a patient.
- Every edit passes through the autoencoder: read edit distances and Table 2 against the null edit (the
  reconstruction alone).
{% if f.data and f.data.source == "phantom" %}
- Trained on the synthetic phantom: drawings with planted relations, not patients; figures measured on it say
  nothing about real X-rays.
{% elif f.data and f.data.source in ("mimic", "chexpert") %}
- Trained on {{ "MIMIC-CXR" if f.data.source == "mimic" else "CheXpert" }} images: sharing these weights is bound by
  that data set's data use agreement; check it before publishing them.
{% elif f.data %}
- Check the terms of the data it was trained on before sharing these weights.
{% endif %}
{% if f.origin == "trained" %}
- It knows the captions it was trained with (cfaudit's prompt template over the index's labels and
  demographics); other wordings are outside its training.
{% endif %}
{% if f.preset in ("tiny", "tiny-f4") %}
- A CPU-scale preset: {{ f.resolution }} px grayscale images from small networks, far below Stable Diffusion's
  capacity; fine structure is where it fails first.
{% endif %}
{% if f.origin == "random" %}
- Its UNet is untrained: samples are noise until `cfaudit train` has run.
{% elif f.origin == "autoencoder" %}
- Only the autoencoder was trained here: what it draws is what the folder it started from draws.
{% endif %}

## Use

{% if f.text_encoder == "clip" %}
```python
from diffusers import StableDiffusionPipeline
{% if f.reference == "demo" %}
from cfaudit.models.shipped_model import DEMO_DIR

pipeline = StableDiffusionPipeline.from_pretrained(str(DEMO_DIR))
{% else %}

pipeline = StableDiffusionPipeline.from_pretrained("{{ f.reference }}")
{% endif %}
```

{% endif %}
With cfaudit: `--model {{ f.reference }}` in `cfaudit sample`, `cfaudit edit`, `cfaudit discover` and
`cfaudit models info`.
""")


def render(facts: CardFacts) -> str:
    """The generated part of the card (between the markers)."""
    text = _TEMPLATE.render(f=facts, version=__version__, not_measured=_NOT_MEASURED)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
