"""``hf:DIR``: a local transformers model directory, loaded offline, as a plain nn.Module.

The directory holds ``config.json`` and weights (as written by
``save_pretrained``). The class named in ``config.architectures`` is used
when transformers has it (so a sequence classifier keeps its head), otherwise
``AutoModel``. Remote code is never trusted and nothing is downloaded.
The returned :class:`HFModule` forwards to the transformers model and returns
one tensor (``logits`` when the model has a head, else ``last_hidden_state``),
so that analysis, export and compression see an ordinary module.

Example:
    >>> import tempfile
    >>> from transformers import BertConfig, BertModel
    >>> d = tempfile.mkdtemp()
    >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    >>> BertModel(cfg).save_pretrained(d)
    >>> import torch
    >>> create_hf(d)(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 16])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import SpecError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for one load, then restore them.

    Example:
        >>> with quiet_transformers():
        ...     pass
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


class HFModule(nn.Module):
    """Wrap a transformers model so that ``forward`` returns a tensor, not a ModelOutput.

    ``tokenizer`` is the directory's tokenizer, or None when it has none.

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        >>> HFModule(BertModel(cfg))(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 16])
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        for key in ("logits", "last_hidden_state"):
            value = getattr(out, key, None)
            if isinstance(value, Tensor):
                return value
        return out[0]


def create_hf(path: str | Path) -> HFModule:
    """Load the transformers model stored in directory ``path`` (offline) as an :class:`HFModule`.

    Raises :class:`SpecError` when the directory or its ``config.json`` is missing.

    Example:
        >>> create_hf("/no/such/dir")
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: hf model directory '/no/such/dir' does not exist; ...
    """
    try:
        import transformers
    except ImportError:
        raise SpecError("hf models need transformers: pip install 'deepshrink[transformers]'") from None
    d = Path(path)
    if not d.is_dir():
        raise SpecError(f"hf model directory {str(d)!r} does not exist; pass a folder written by save_pretrained")
    config_file = d / "config.json"
    if not config_file.is_file():
        raise SpecError(f"hf model directory {str(d)!r} has no config.json; pass a folder written by save_pretrained")
    try:
        architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise SpecError(f"{str(config_file)!r} is not a valid JSON config: {exc}") from None
    cls = transformers.AutoModel
    for name in architectures:
        candidate = getattr(transformers, str(name), None)
        if isinstance(candidate, type) and issubclass(candidate, transformers.PreTrainedModel):
            cls = candidate
            break
    try:
        with quiet_transformers():
            model = cls.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError(f"cannot load the transformers model in {str(d)!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    tokenizer = None
    if any((d / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    return HFModule(model, tokenizer)
