"""Put a model back as it was when an in-place change fails half-way.

Torch-Pruning changes a model layer by layer; when its dependency graph has
mis-mapped a coupling (a ``torch.stack`` of branches, a ``split`` feeding
several convolutions) the pruned model no longer runs, or a step fails in the
middle. The user's model object must then be left exactly as it was, with the
same submodule objects, not a half-pruned one. A :class:`Rollback` keeps a deep
copy and, on :meth:`Rollback.restore`, moves every saved attribute (parameters,
buffers, sizes such as ``in_channels``, the surgery log) back into the live
modules, which keep their identity.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 3))
    >>> layer = model[0]
    >>> undo = Rollback(model)
    >>> layer.weight = nn.Parameter(torch.zeros(2, 4)); layer.out_features = 2
    >>> undo.restore()
    >>> model[0] is layer, tuple(layer.weight.shape), layer.out_features
    (True, (3, 4), 3)
"""

from __future__ import annotations

import copy

from torch import nn


class Rollback:
    """A saved copy of ``model`` (its whole module tree) that :meth:`restore` writes back in place.

    Hooks are the one thing not taken from the deep copy: the hook dictionaries are put back as they
    were, in place and with the same functions, so that a hook the caller registered still runs and
    its handle still removes it, while a hook a tracer left behind is gone.
    """

    def __init__(self, model: nn.Module, saved: nn.Module | None = None) -> None:
        """``saved``: a deep copy of ``model`` made earlier, to use instead of copying now.

        (Copy before tracing: a traced model may hold tensors of the autograd graph, which
        cannot be deep-copied, e.g. LeViT's cached attention biases.)
        """
        self.model = model
        # The live module objects by name, as they are now: a change may replace or drop some of them.
        self.live = dict(model.named_modules(remove_duplicate=False))
        self.hooks = {(name, key): (table, copy.copy(table)) for name, m in self.live.items()
                      for key, table in m.__dict__.items() if key.endswith("hooks") and isinstance(table, dict)}
        self.saved = copy.deepcopy(model) if saved is None else saved

    def restore(self) -> None:
        """Give every submodule its saved attributes and children back; the submodule objects stay the same.

        Example:
            >>> m = nn.Sequential(nn.Linear(2, 2)); undo = Rollback(m); m[0] = nn.ReLU(); undo.restore(); type(m[0]).__name__
            'Linear'
            >>> m = nn.Linear(2, 2); undo = Rollback(m); _ = m.register_forward_hook(lambda *a: None)
            >>> undo.restore(); len(m._forward_hooks)
            0
        """
        for name, saved in self.saved.named_modules(remove_duplicate=False):
            module = self.live[name]
            for key in [k for k in module.__dict__ if k not in saved.__dict__]:
                del module.__dict__[key]  # attributes the change added
            for key, value in saved.__dict__.items():
                if (name, key) in self.hooks:
                    table, entries = self.hooks[(name, key)]
                    table.clear()
                    table.update(entries)
                    module.__dict__[key] = table
                elif key != "_modules":
                    module.__dict__[key] = value
            prefix = f"{name}." if name else ""
            module.__dict__["_modules"] = {k: None if child is None else self.live[prefix + k]
                                           for k, child in saved._modules.items()}


__all__ = ["Rollback"]
