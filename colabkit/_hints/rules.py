"""Plain-language hints for the PyTorch errors every beginner meets: the rules, `explain` and `Hint`.

`explain(exc)` turns an exception (or a warning) into a `Hint`: what happened,
the likely cause, and the fix as a line of code; `None` when it is not one of
the known errors (no hint is better than a wrong one). Recognition is by the
exception's class name and message only, so torch is never imported here.

Where hints are shown lives elsewhere in this package: `excepthook` (scripts),
`shell` (IPython and Colab cells), `switch` (`colabkit.hints()` on/off).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

__all__ = ["Hint", "explain"]

OFF_SWITCH = "colabkit.hints(False) or %colab_hints off turns these hints off"
_WIDTH = 88

# The HTML box has its own opaque background, so its text contrast does not
# depend on the notebook's theme (Colab light, Colab dark #383838, Jupyter).
HTML_BACKGROUND = "#fff4de"
HTML_TEXT = "#1f1f1f"
HTML_MUTED = "#5a4a2a"
HTML_CODE_BACKGROUND = "#fffdf7"
HTML_BORDER = "#c77700"
MONOSPACE = "ui-monospace, SFMono-Regular, Menlo, Consolas, Liberation Mono, DejaVu Sans Mono, monospace"  # no quotes: the style attribute is single-quoted


class Hint:
    """One plain-language explanation of a PyTorch error or warning.

    `explain()` returns one; in a notebook it displays as a box (HTML, readable
    in Colab's light and dark themes and plain Jupyter), in a terminal as text.
    A plain class rather than a dataclass: importing dataclasses (and inspect)
    would double what this module costs to import.

    Args:
        kind: the family: device, shape, dtype, oom, no-gpu or broadcast.
        title: one line saying what happened.
        cause: the likely cause (paragraphs separated by newlines).
        fix: the fix, as lines of code.
    """

    __slots__ = ("kind", "title", "cause", "fix")

    def __init__(self, kind: str, title: str, cause: str, fix: str) -> None:
        self.kind, self.title, self.cause, self.fix = kind, title, cause, fix

    def _fields(self) -> tuple[str, str, str, str]:
        return (self.kind, self.title, self.cause, self.fix)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hint) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Hint(kind={self.kind!r}, title={self.title!r}, cause={self.cause!r}, fix={self.fix!r})"

    def __str__(self) -> str:
        import textwrap

        lines = [f"╭─ colabkit hint: {self.title}"]
        for paragraph in self.cause.split("\n"):
            lines += ["│ " + line for line in textwrap.wrap(paragraph, _WIDTH - 2) or [""]]
        lines.append("│ Fix:")
        lines += ["│   " + line for line in self.fix.split("\n")]
        lines.append(f"╰─ ({OFF_SWITCH})")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """A box with its own colors (contrast >= 4.5:1 whatever the theme) and monospace code.

        Jupyter's CSS restyles bare <pre> blocks, so the code is a <code> with
        an explicit font-family inside the <pre>.
        """
        import html

        text = f"color:{HTML_TEXT}"
        cause = "".join(f"<p style='margin:4px 0;{text}'>{html.escape(p)}</p>" for p in self.cause.split("\n"))
        return (
            f"<div style='border-left:4px solid {HTML_BORDER};background:{HTML_BACKGROUND};{text};"
            "padding:6px 12px;margin:6px 0;font-family:sans-serif;font-size:13px;line-height:1.4'>"
            f"<b>colabkit hint: {html.escape(self.title)}</b>{cause}"
            f"<p style='margin:4px 0;{text}'>Fix:</p>"
            f"<pre style='margin:2px 0 4px 0;padding:4px 8px;background:{HTML_CODE_BACKGROUND};{text};"
            f"white-space:pre-wrap;font-family:{MONOSPACE}'>"
            f"<code style='font-family:{MONOSPACE};font-size:12px;background:{HTML_CODE_BACKGROUND};{text}'>"
            f"{html.escape(self.fix)}</code></pre>"
            f"<span style='color:{HTML_MUTED};font-size:11px'>{html.escape(OFF_SWITCH)}</span></div>"
        )


# --------------------------------------------------------------------------- recognising

_DEVICE_WORD = r"\b(cuda(?::\d+)?|cpu|mps|meta|xla(?::\d+)?|GPU|CPU|CUDA|MPS)\b"
_TENSOR_TYPE = r"torch\.(?:(cuda)\.)?(\w+)Tensor"
_TYPE_NAMES = {
    "double": "Double", "float": "Float", "half": "Half", "bfloat16": "BFloat16",
    "long": "Long", "int": "Int", "short": "Short", "char": "Char", "byte": "Byte", "bool": "Bool",
}
_SIZE = r"torch\.Size\(\[([\d, ]*)\]\)"


def _devices(text: str) -> list[str]:
    """Device names in the order the message names them, normalised (CPU -> cpu, GPU -> cuda)."""
    found: list[str] = []
    for word in re.findall(_DEVICE_WORD, text):
        name = {"CPU": "cpu", "GPU": "cuda", "CUDA": "cuda", "MPS": "mps"}.get(word, word)
        if name not in found:
            found.append(name)
    # "cuda" next to "cuda:0" names the same device
    if "cuda" in found and any(d.startswith("cuda:") for d in found):
        found.remove("cuda")
    return found


def _dtype_name(text: str) -> str:
    """'double', 'Double', 'torch.cuda.DoubleTensor', 'CUDAFloatType' -> 'Double' / 'Float'."""
    match = re.search(_TENSOR_TYPE, text)
    word = match.group(2) if match else text.strip().strip("'")
    word = re.sub(r"^(?:CUDA|CPU)(\w+)Type$", r"\1", word)
    return _TYPE_NAMES.get(word.lower(), word)


def _sizes(text: str) -> list[list[int]]:
    return [[int(n) for n in m.split(",") if n.strip()] for m in re.findall(_SIZE, text)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- device -----------------------------------------------------------------

_MOVE_FIX = (
    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
    "model = model.to(device)\n"
    "inputs, targets = inputs.to(device), targets.to(device)   # every batch, inside the loop"
)


def _device_hint(devices: list[str], detail: str = "") -> Hint:
    named = " and ".join(devices[:2]) if len(devices) >= 2 else ""
    title = f"tensors on different devices ({named})" if named else "tensors on different devices"
    if "meta" in devices:
        other = next((d for d in devices if d != "meta"), "cpu")
        return Hint(
            "device",
            title,
            "One side lives on the 'meta' device: it has shapes but no data. Models built with "
            "device='meta' (or by an 'empty weights' helper) must be given real storage before "
            f"they can compute, and the inputs here are on {other}.",
            f"{f'model = model.to_empty(device={other!r})':<40}# real (uninitialised) storage\n"
            f"{'model.load_state_dict(state)':<40}# then load or initialise the weights",
        )
    cause = (
        f"One operation got tensors on {named or 'two different devices'}. PyTorch never moves data between devices by "
        "itself: the model's parameters and every tensor fed to it must be on the same device. "
        "Usually the model was moved with .to(device) and the batch was not (or the other way "
        "round), or a tensor made inside forward() (torch.zeros(...)) stayed on the CPU."
    )
    return Hint("device", title, cause + detail, _MOVE_FIX)


def _same_device_message(match: re.Match, message: str) -> Hint:
    return _device_hint(_devices(message))


def _rnn_device(match: re.Match, message: str) -> Hint:
    hint = _device_hint(_devices(message))
    if match.group("what") == "hidden":
        fix = hint.fix + "\nh0 = torch.zeros(num_layers, batch, hidden_size, device=inputs.device)"
        return Hint(hint.kind, hint.title, hint.cause, fix)
    return hint


def _input_weight_types(match: re.Match, message: str) -> Hint | None:
    """Conv/RNN 'Input type (A) and weight type (B) should be the same': device or dtype."""
    first, second = match.group("a"), match.group("b")
    dev_a = "cuda" if "cuda" in first.lower() else "cpu"
    dev_b = "cuda" if "cuda" in second.lower() else "cpu"
    if first.lower() not in _TYPE_NAMES and second.lower() not in _TYPE_NAMES and dev_a != dev_b:
        return _device_hint([dev_a, dev_b], f" Here the input is on {dev_a} and the layer's {match.group('what')} on {dev_b}.")
    type_a, type_b = _dtype_name(first), _dtype_name(second)
    if type_a != type_b:
        return _dtype_hint(type_a, type_b)
    return None


# --- shape ------------------------------------------------------------------

def _matmul_shapes(match: re.Match, message: str) -> Hint:
    rows, width, expected, out = (int(match.group(g)) for g in ("a", "b", "c", "d"))
    return Hint(
        "shape",
        f"shape mismatch: a layer expects {expected} input features but got {width}",
        f"A matrix multiply got a ({rows}x{width}) input and a ({expected}x{out}) weight. For "
        f"nn.Linear({expected}, {out}) that means: in_features = {expected}, but each sample "
        f"arriving has {width} values. Usually the Linear after a Flatten / view was sized for "
        "another input (image size, channels, the conv/pool output), or the input was not "
        "flattened. print(x.shape) just before the layer shows what arrives.",
        f"{f'nn.Linear({width}, {out})':<22}# in_features = what arrives\n"
        f"{f'nn.LazyLinear({out})':<22}# or let PyTorch infer in_features on the first batch",
    )


def _state_dict_sizes(match: re.Match, message: str) -> Hint:
    found = re.findall(
        r"size mismatch for ([\w.]+): copying a param with shape (torch\.Size\(\[[\d, ]*\]\)) "
        r"from checkpoint, the shape in current model is (torch\.Size\(\[[\d, ]*\]\))",
        message,
    )
    name, saved, current = found[0]
    saved_shape, current_shape = _sizes(saved)[0], _sizes(current)[0]
    more = f" ({_plural(len(found) - 1, 'more parameter')} too)" if len(found) > 1 else ""
    return Hint(
        "shape",
        "checkpoint does not fit the model (size mismatch)",
        f"'{name}' is {saved_shape} in the checkpoint but {current_shape} in this model{more}. "
        "The weights were saved from a model with other layer sizes: the model definition "
        "(hidden size, number of classes, input size) changed since the checkpoint was saved.",
        "model = Net(...)   # build it with the sizes it was saved with, then load_state_dict\n"
        "# or, to fine-tune with new layers, load only the weights that fit:\n"
        "own = model.state_dict()\n"
        "state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}\n"
        "model.load_state_dict(state, strict=False)",
    )


def _state_dict_keys(match: re.Match, message: str) -> Hint | None:
    """Missing/unexpected keys: only the two causes that can be told for sure."""
    unexpected_part = re.search(r"Unexpected key\(s\) in state_dict: (.*)", message)
    missing_part = re.search(r"Missing key\(s\) in state_dict: (.*)", message)
    unexpected = re.findall(r'"([^"]+)"', unexpected_part.group(1)) if unexpected_part else []
    missing = re.findall(r'"([^"]+)"', missing_part.group(1)) if missing_part else []
    if not unexpected:
        return None
    for prefix, origin in (("module.", "nn.DataParallel / DistributedDataParallel"), ("_orig_mod.", "torch.compile")):
        stripped = {k[len(prefix):] for k in unexpected if k.startswith(prefix)}
        if len(stripped) == len(unexpected) and (not missing or stripped >= set(missing)):
            return Hint(
                "shape",
                f"checkpoint keys carry a '{prefix}' prefix",
                f"The weights were saved from a model wrapped by {origin}, which prefixes every "
                f"name with '{prefix}'; this model's names have no prefix.",
                f"state = {{k.removeprefix('{prefix}'): v for k, v in state.items()}}\n"
                "model.load_state_dict(state)\n"
                f"# when saving next time: torch.save(model{'.module' if prefix == 'module.' else '._orig_mod'}.state_dict(), path)",
            )
    checkpoint_words = ("model", "state_dict", "optimizer", "epoch", "scheduler")
    if (missing and all("." not in k for k in unexpected)
            and any(word in k.lower() for k in unexpected for word in checkpoint_words)):
        shown = ", ".join(repr(k) for k in unexpected[:4])
        key = next((k for k in unexpected if "model" in k.lower()), None) or next(
            (k for k in unexpected if "state_dict" in k and "optim" not in k), None) or unexpected[0]
        return Hint(
            "shape",
            "a whole checkpoint was passed to load_state_dict",
            f"load_state_dict got a dictionary with keys {shown}: a training checkpoint that "
            "holds the model's weights under one key, not the weights themselves.",
            f"model.load_state_dict(checkpoint[{key!r}])",
        )
    return None


def _conv_channels(match: re.Match, message: str) -> Hint:
    wanted, got = int(match.group("want")), int(match.group("got"))
    shape = [int(n) for n in match.group("shape").split(",")]
    if len(shape) == 4 and shape[-1] == wanted:
        cause = (f"The input {shape} is channels-last (N, H, W, C), as images from NumPy / PIL "
                 "are; PyTorch convolutions take (N, C, H, W).")
        fix = "x = x.permute(0, 3, 1, 2)    # (N, H, W, C) -> (N, C, H, W); transforms.ToTensor() does this"
    elif wanted == 3 and got == 1:
        cause = ("The first convolution was made for colour images (3 channels) but the images are "
                 "grayscale (1 channel).")
        fix = ("transforms.Grayscale(num_output_channels=3)   # in the dataset transform, or\n"
               "nn.Conv2d(1, ...)                              # a first layer for 1 channel")
    else:
        cause = (f"The convolution was made for {wanted} input channels but the input {shape} has "
                 f"{got} in dimension 1. The layer's in_channels must equal the previous layer's "
                 "out_channels (or the image's channels).")
        fix = f"nn.Conv2d({got}, ...)   # in_channels = what arrives"
    return Hint("shape", f"convolution expects {wanted} input channels but got {got}", cause, fix)


def _batch_sizes(match: re.Match, message: str) -> Hint:
    out, target = match.group(1), match.group(2)
    return Hint(
        "shape",
        f"the model returned {out} rows for {target} targets",
        "The output and the targets disagree on the batch size. Usually a view / reshape with a "
        "hard-coded size (x.view(-1, 16 * 5 * 5) after the image size changed) folded part of "
        "the features into the batch dimension.",
        "x = torch.flatten(x, 1)     # keeps dimension 0 (the batch) as it is",
    )


def _target_shape(match: re.Match, message: str) -> Hint:
    return Hint(
        "shape",
        "targets have an extra dimension",
        "CrossEntropyLoss / NLLLoss take one class index per sample: targets of shape (N,). "
        "These have shape (N, 1) or more, which happens when labels come from a 2-D array or "
        "a DataFrame column list.",
        "loss = criterion(outputs, targets.view(-1).long())",
    )


# --- dtype ------------------------------------------------------------------

def _dtype_hint(first: str, second: str) -> Hint:
    pair = {first, second}
    if pair == {"Double", "Float"}:
        cause = (f"One tensor is {first}, the other {second}. Layers are float32 (Float); data made "
                 "with NumPy is float64 (Double) by default, and torch.from_numpy / torch.tensor keep "
                 "that dtype.")
        fix = ("inputs = inputs.float()                 # float64 -> float32, or at the source:\n"
               "torch.tensor(array, dtype=torch.float32)  # / array.astype(np.float32)")
    elif "Float" in pair and pair & {"Half", "BFloat16"}:
        cause = (f"One tensor is {first}, the other {second}: half and full precision mixed by hand. "
                 "torch.autocast casts per operation, so it does not need .half() on the model.")
        fix = "with torch.autocast('cuda', dtype=torch.float16):\n    outputs = model(inputs)"
    elif "Float" in pair and pair & {"Long", "Int", "Short", "Byte", "Char", "Bool"}:
        other = (pair - {"Float"}).pop()
        cause = (f"One tensor is {first}, the other {second}: integer data ({other}, e.g. raw pixel "
                 "values or a NumPy int array) went into a float layer.")
        fix = "inputs = inputs.float()     # (and / 255 for 0..255 pixel values)"
    else:
        cause = f"One tensor is {first}, the other {second}; an operation needs both of one dtype."
        fix = "b = b.to(a.dtype)"
    return Hint("dtype", f"dtype mismatch ({first} and {second})", cause, fix)


def _two_dtypes(match: re.Match, message: str) -> Hint:
    return _dtype_hint(_dtype_name(match.group("a")), _dtype_name(match.group("b")))


def _target_dtype(match: re.Match, message: str) -> Hint:
    got = _dtype_name(match.group("got"))
    return Hint(
        "dtype",
        f"classification targets must be integers (Long), not {got}",
        "CrossEntropyLoss / NLLLoss take class indices as int64 (torch.long), one per sample. "
        f"These targets are {got}: labels read from a NumPy float array or a DataFrame come out "
        "as floats. (Targets that are class probabilities, one-hot, must instead be float and "
        "have the same shape as the outputs.)",
        "loss = criterion(outputs, targets.long())",
    )


def _index_dtype(match: re.Match, message: str) -> Hint:
    got = _dtype_name(match.group("got"))
    return Hint(
        "dtype",
        f"embedding indices must be integers (Long), not {got}",
        "nn.Embedding looks rows up by index, so its input must be an integer tensor; these are "
        f"{got} (token ids that went through a float array).",
        "outputs = embedding(token_ids.long())",
    )


# --- memory and GPU ---------------------------------------------------------

def _gpu_oom(match: re.Match | None, message: str) -> Hint:
    amount = r"([\d.]+ ?[KMGT]?i?B)"
    asked = re.search(r"Tried to allocate " + amount, message)
    total = re.search(r"total capacity of " + amount, message) or re.search(amount + r" total capacity", message)
    free = re.search(r"of which " + amount + r" is free", message) or re.search(amount + r" free", message)
    details = []
    if asked:
        details.append(f"it asked for {asked.group(1)}")
    if total:
        details.append(f"the GPU has {total.group(1)}" + (f", {free.group(1)} free" if free else ""))
    said = f" ({'; '.join(details)})" if details else ""
    return Hint(
        "oom",
        "the GPU ran out of memory",
        f"The GPU could not allocate memory{said}. Memory grows with the batch size, the model "
        "and the input size, and with tensors kept alive: a loss appended to a list instead of "
        "loss.item(), evaluation without torch.no_grad(), or an earlier failed run still holding "
        "memory in this notebook. !nvidia-smi shows how much is in use and by which process.",
        "batch_size = batch_size // 2           # or: python train.py --batch-size auto\n"
        "with torch.autocast('cuda', dtype=torch.float16): ...   # mixed precision halves activations\n"
        "del outputs, loss; import gc; gc.collect(); torch.cuda.empty_cache()   # free a failed run",
    )


def _cpu_oom(match: re.Match, message: str) -> Hint:
    size = int(match.group(1))
    return Hint(
        "oom",
        "out of RAM (CPU memory)",
        f"A tensor of {size / 2**30:.2f} GiB could not be allocated in main memory. Usually the "
        "whole dataset is loaded into one tensor, or a shape is far larger than intended "
        "(an outer product from broadcasting, a missing flatten).",
        "load samples in Dataset.__getitem__ instead of all at once; check the shape you allocate",
    )


def _no_gpu(match: re.Match, message: str) -> Hint:
    from .._runtime import in_colab
    from .._status import ENABLE_GPU_FIX

    where = ENABLE_GPU_FIX if in_colab() else "use a machine with an NVIDIA GPU, or run on the CPU"
    return Hint(
        "no-gpu",
        "no GPU in this runtime",
        f"The code asks for CUDA but this runtime has no GPU. To get one: {where}. To run "
        "anywhere, choose the device once and use it everywhere.",
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
        "model = model.to(device)",
    )


def _cuda_checkpoint(match: re.Match, message: str) -> Hint:
    return Hint(
        "no-gpu",
        "a GPU checkpoint loaded where there is no GPU",
        "The checkpoint was saved from tensors on a GPU; this runtime has none, so torch.load "
        "cannot put them back there.",
        "state = torch.load(path, map_location='cpu')   # or map_location=device",
    )


# --- the silent one: broadcasting in a loss ------------------------------------

def _loss_broadcast(match: re.Match, message: str) -> Hint:
    sizes = _sizes(message)
    target, output = (sizes + [[], []])[:2]
    if output[:-1] == target and output[-1:] == [1]:
        fix = "loss = criterion(outputs.squeeze(1), targets)   # (N, 1) -> (N,)"
    elif target[:-1] == output and target[-1:] == [1]:
        fix = "loss = criterion(outputs, targets.squeeze(1))   # (N, 1) -> (N,)"
    else:
        fix = "loss = criterion(outputs, targets.view_as(outputs))   # print both .shape if this fails"
    grid = ""
    if len(output) == 2 and output[1] == 1 and target == output[:1]:
        grid = f" a ({output[0]}x{output[0]}) grid that compares every prediction with every target, so"
    elif len(target) == 2 and target[1] == 1 and output == target[:1]:
        grid = f" a ({target[0]}x{target[0]}) grid that compares every prediction with every target, so"
    return Hint(
        "broadcast",
        "the loss compares tensors of different shapes (silently wrong)",
        f"The loss got outputs of shape {output} and targets of shape {target}. There is no "
        f"error: broadcasting stretches them into{grid or ' a common shape, so'} the loss is "
        "computed over the wrong pairs and the model learns to predict the average.",
        fix,
    )


# --- the rules, most specific first ---------------------------------------------

_Builder = Callable[[re.Match, str], "Hint | None"]
_Rule = tuple  # (exception class names, any in the MRO matches; pattern; builder)
_RUNTIME = ("RuntimeError",)


# each rule: (exception class names, any in the MRO matches; pattern; builder). Patterns
# stay text: re compiles (and caches) a pattern on first use, so importing stays cheap.
_RULES: list[_Rule] = [
    # out of memory (also matched by class name, see explain)
    (_RUNTIME, r"CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED"
                    r"|MPS backend out of memory|HIP out of memory", _gpu_oom),
    (_RUNTIME, r"DefaultCPUAllocator: (?:can't allocate memory|not enough memory): "
                    r"you tried to allocate (\d+) bytes", _cpu_oom),
    # no GPU / CUDA checkpoint on a CPU runtime
    (_RUNTIME, r"Attempting to deserialize object on a CUDA device but torch\.cuda\.is_available\(\) is False",
          _cuda_checkpoint),
    (_RUNTIME + ("AssertionError",), r"No CUDA GPUs are available|Found no NVIDIA driver on your system"
                                          r"|Torch not compiled with CUDA enabled", _no_gpu),
    # device mismatch, every wording torch has used
    (_RUNTIME, r"Expected all tensors to be on the same device", _same_device_message),
    (_RUNTIME, r"Tensor on device \S+ is not on the expected device \S+?!", _same_device_message),
    (_RUNTIME, r"Expected object of (?:device type|backend) \w+ but got (?:device type|backend) \w+",
          _same_device_message),
    (_RUNTIME, r"Tensor for argument #\d+ '\w+' is on \w+, but expected it to be on \w+", _same_device_message),
    (_RUNTIME, r"indices should be either on cpu or on the same device as the indexed tensor", _same_device_message),
    (_RUNTIME, r"module must have its parameters and buffers on device \S+ .* but found one of them on device: \S+",
          _same_device_message),
    (_RUNTIME, r"Input and (?P<what>parameter|hidden) tensors are not at the same device, found input tensor "
                    r"at \S+ and \w+ tensor at \S+", _rnn_device),
    (_RUNTIME, r"Input type \((?P<a>[\w.]+)\) and (?P<what>weight|bias) type \((?P<b>[\w.]+)\) should be the same",
          _input_weight_types),
    # shape
    (_RUNTIME, r"mat1 and mat2 shapes cannot be multiplied \((?P<a>\d+)x(?P<b>\d+) and (?P<c>\d+)x(?P<d>\d+)\)",
          _matmul_shapes),
    (_RUNTIME, r"size mismatch, m1: \[(?P<a>\d+) x (?P<b>\d+)\], m2: \[(?P<c>\d+) x (?P<d>\d+)\]", _matmul_shapes),
    (_RUNTIME, r"Error\(s\) in loading state_dict for \w+:.*size mismatch for ", _state_dict_sizes),
    (_RUNTIME, r"Error\(s\) in loading state_dict for \w+:.*Unexpected key\(s\) in state_dict", _state_dict_keys),
    (_RUNTIME, r"Given groups=\d+, weight of size \[[\d, ]+\], expected input\[(?P<shape>[\d, ]+)\] to have "
                    r"(?P<want>\d+) channels, but got (?P<got>\d+) channels instead", _conv_channels),
    (("ValueError",), r"Expected input batch_size \((\d+)\) to match target batch_size \((\d+)\)", _batch_sizes),
    (_RUNTIME, r"0D or 1D target tensor expected, multi-target not supported", _target_shape),
    # dtype: targets and indices first (they name Long)
    (_RUNTIME, r"expected target dtype to be Long(?: or Byte)?, but got (?P<got>\w+)", _target_dtype),
    (_RUNTIME, r"expected scalar type '?Long'? but found '?(?P<got>\w+)", _target_dtype),
    (_RUNTIME, r"Expected object of scalar type Long but got scalar type (?P<got>\w+) for argument #\d+ 'target'",
          _target_dtype),
    (_RUNTIME, r"\"nll_loss\w*\" not implemented for '(?P<got>\w+)'", _target_dtype),
    (_RUNTIME, r"Expected tensor for argument #\d+ 'indices' to have (?:one of the following )?scalar types?: "
                    r"Long(?:, Int)?; but got (?P<got>[\w.]+) instead", _index_dtype),
    (_RUNTIME, r"mat1 and mat2 must have the same dtype, but got (?P<a>\w+) and (?P<b>\w+)", _two_dtypes),
    (_RUNTIME, r"expected (?:mat1|m1) and (?:mat2|m2) to have the same dtype, but got: (?P<a>\w+) != (?P<b>\w+)",
          _two_dtypes),
    (_RUNTIME, r"expected scalar type '?(?P<a>\w+)'? but found '?(?P<b>\w+)", _two_dtypes),
    (_RUNTIME, r"Found dtype (?P<b>\w+) but expected (?P<a>\w+)", _two_dtypes),
    (_RUNTIME, r"Expected object of scalar type (?P<a>\w+) but got scalar type (?P<b>\w+) for argument", _two_dtypes),
    # the silent one (a UserWarning from mse_loss / l1_loss / smooth_l1_loss / huber_loss)
    (("UserWarning",), r"Using a target size \(torch\.Size\(\[[\d, ]*\]\)\) that is different to the input "
                            r"size \(torch\.Size\(\[[\d, ]*\]\)\)", _loss_broadcast),
]


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _explain_one(exc: BaseException) -> Hint | None:
    names = _class_names(exc)
    message = str(exc)
    if "OutOfMemoryError" in names:  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
        return _gpu_oom(None, message)
    for classes, pattern, build in _RULES:
        if names.isdisjoint(classes):
            continue
        match = re.search(pattern, message, re.DOTALL)
        if match is not None:
            hint = build(match, message)
            if hint is not None:
                return hint
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it (raise ... from) or was being handled."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def explain(exc: BaseException) -> Hint | None:
    """A plain-language Hint for a common PyTorch error or warning, or None.

    Exceptions raised from a recognised one (`raise ... from`) are explained by
    their cause. Recognition reads only the class name and the message, so it
    works without importing torch. Unknown errors give None: no hint is better
    than a wrong one.

    Args:
        exc: an exception, or a Warning instance (as `warnings` delivers it).

    Returns:
        The Hint, or None when the error is not one colabkit knows.

    Example:
        >>> import colabkit
        >>> hint = colabkit.explain(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x10 and 20x5)"))
        >>> hint.kind, hint.title
        ('shape', 'shape mismatch: a layer expects 20 input features but got 10')
        >>> colabkit.explain(ValueError("something else")) is None
        True
    """
    if not isinstance(exc, BaseException):
        return None
    for link in _chain(exc):
        try:
            hint = _explain_one(link)
        except Exception:  # a message in an unexpected shape: no hint rather than a crash
            hint = None
        if hint is not None:
            return hint
    return None
