"""colabkit.explain: real errors from torch on CPU, recorded CUDA messages, and the
script excepthook in real subprocesses."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from colabkit import Hint, explain
from tests.conftest import run_python


def raised(action) -> BaseException:
    """The exception that `action()` raises (fails the test if it raises none)."""
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - we want exactly what torch raised
        return exc
    pytest.fail("expected an exception, none was raised")


def warned(action) -> Warning:
    """The one warning that `action()` emits."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    assert len(caught) == 1, [str(w.message) for w in caught]
    return caught[0].message


# ------------------------------------------------------------------ real errors from torch (CPU)

def test_linear_fed_the_wrong_width_names_both_widths():
    exc = raised(lambda: nn.Linear(512, 10)(torch.randn(64, 784)))
    assert "mat1 and mat2 shapes cannot be multiplied (64x784 and 512x10)" in str(exc)
    hint = explain(exc)
    assert hint.kind == "shape"
    assert "expects 512 input features but got 784" in hint.title
    assert "nn.Linear(784, 10)" in hint.fix
    assert "LazyLinear(10)" in hint.fix


def test_numpy_float64_input_into_a_float32_layer():
    exc = raised(lambda: nn.Linear(4, 2)(torch.from_numpy(np.random.rand(3, 4))))
    hint = explain(exc)
    assert hint.kind == "dtype"
    assert "Double" in hint.title and "Float" in hint.title
    assert "NumPy" in hint.cause and "float64" in hint.cause
    assert ".float()" in hint.fix


@pytest.mark.parametrize("make_error", [
    lambda: torch.randn(3, 4).double() @ torch.randn(4, 2),          # "expected m1 and m2 ... double != float"
    lambda: nn.Conv2d(1, 2, 3)(torch.randn(1, 1, 5, 5).double()),    # "Input type (double) and bias type (float)"
], ids=["matmul", "conv"])
def test_other_float64_wordings(make_error):
    hint = explain(raised(make_error))
    assert hint.kind == "dtype"
    assert "(Double and Float)" in hint.title
    assert ".float()" in hint.fix


@pytest.mark.parametrize("targets", [
    torch.tensor([0.0, 1, 2, 0]),
    torch.tensor([0, 1, 2, 0], dtype=torch.int32),
], ids=["float", "int32"])
def test_cross_entropy_with_non_long_targets(targets):
    exc = raised(lambda: nn.CrossEntropyLoss()(torch.randn(4, 3), targets))
    assert "expected target dtype to be Long" in str(exc)
    hint = explain(exc)
    assert hint.kind == "dtype"
    assert "targets must be integers (Long)" in hint.title
    assert "targets.long()" in hint.fix


def test_cross_entropy_with_column_targets():
    hint = explain(raised(lambda: nn.CrossEntropyLoss()(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long))))
    assert hint.kind == "shape"
    assert "targets.view(-1)" in hint.fix


@pytest.mark.parametrize("make_error, devices", [
    (lambda: nn.Linear(4, 2, device="meta")(torch.randn(3, 4)), "meta and cpu"),
    (lambda: torch.randn(3, 4, device="meta") + torch.randn(3, 4), "cpu and meta"),
], ids=["meta-model", "meta-tensor"])
def test_meta_device_against_cpu(make_error, devices):
    exc = raised(make_error)
    assert "is not on the expected device" in str(exc)
    hint = explain(exc)
    assert hint.kind == "device"
    assert f"({devices})" in hint.title
    assert "to_empty(device='cpu')" in hint.fix


@pytest.mark.parametrize("output_shape, target_shape, fix", [
    ((16, 1), (16,), "outputs.squeeze(1), targets"),
    ((16,), (16, 1), "outputs, targets.squeeze(1)"),
])
def test_mse_loss_broadcast_warning(output_shape, target_shape, fix):
    warning = warned(lambda: nn.MSELoss()(torch.randn(output_shape), torch.randn(target_shape)))
    assert isinstance(warning, UserWarning)
    hint = explain(warning)
    assert hint.kind == "broadcast"
    assert "silently wrong" in hint.title
    assert "(16x16) grid" in hint.cause
    assert fix in hint.fix


def test_l1_loss_gives_the_same_warning_and_hint():
    hint = explain(warned(lambda: nn.L1Loss()(torch.randn(8, 1), torch.randn(8))))
    assert hint.kind == "broadcast"


def test_load_state_dict_size_mismatch_names_the_parameter():
    saved = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).state_dict()
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    hint = explain(raised(lambda: model.load_state_dict(saved)))
    assert hint.kind == "shape"
    assert "'0.weight' is [256, 784] in the checkpoint but [128, 784] in this model" in hint.cause
    assert "2 more parameters" in hint.cause
    assert "strict=False" in hint.fix and "v.shape == own[k].shape" in hint.fix


def test_load_state_dict_from_a_data_parallel_model():
    saved = nn.DataParallel(nn.Linear(4, 2)).state_dict()
    hint = explain(raised(lambda: nn.Linear(4, 2).load_state_dict(saved)))
    assert "'module.' prefix" in hint.title
    assert "removeprefix('module.')" in hint.fix


def test_load_state_dict_given_a_whole_training_checkpoint():
    model = nn.Linear(4, 2)
    checkpoint = {"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": {}}
    hint = explain(raised(lambda: model.load_state_dict(checkpoint)))
    assert hint.fix == "model.load_state_dict(checkpoint['model_state_dict'])"


def test_load_state_dict_other_key_errors_get_no_hint():
    saved = nn.Sequential(nn.Linear(4, 2)).state_dict()
    assert explain(raised(lambda: nn.Sequential(nn.ReLU(), nn.Linear(4, 2)).load_state_dict(saved))) is None


@pytest.mark.parametrize("image, expect", [
    (torch.randn(2, 1, 28, 28), "Grayscale(num_output_channels=3)"),
    (torch.randn(2, 28, 28, 3), "permute(0, 3, 1, 2)"),
], ids=["grayscale", "channels-last"])
def test_convolution_channel_mismatch(image, expect):
    hint = explain(raised(lambda: nn.Conv2d(3, 8, 3)(image)))
    assert hint.kind == "shape"
    assert expect in hint.fix


def test_output_and_target_batch_sizes_differ():
    hint = explain(raised(lambda: nn.CrossEntropyLoss()(torch.randn(64, 10), torch.zeros(32, dtype=torch.long))))
    assert "64 rows for 32 targets" in hint.title
    assert "torch.flatten(x, 1)" in hint.fix


def test_float_token_ids_into_an_embedding():
    hint = explain(raised(lambda: nn.Embedding(10, 3)(torch.tensor([1.0, 2.0]))))
    assert hint.kind == "dtype" and "token_ids.long()" in hint.fix


def test_asking_for_cuda_without_a_gpu(fake_colab):
    if torch.cuda.is_available():  # a GPU machine: the recorded CPU-only message instead
        exc = RuntimeError("No CUDA GPUs are available")
    else:
        exc = raised(lambda: torch.zeros(1, device="cuda"))
    hint = explain(exc)
    assert hint.kind == "no-gpu"
    assert "Change runtime type" in hint.cause  # in Colab: how to get a GPU


# ------------------------------------------------------------------ out of memory

NEW_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 14.74 GiB of which "
    "1.06 GiB is free. Process 4242 has 13.68 GiB memory in use. Of the allocated memory 13.50 GiB is "
    "allocated by PyTorch, and 41.81 MiB is reserved by PyTorch but unallocated. If reserved but unallocated "
    "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
    "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
OLD_OOM = (
    "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 14.76 GiB total capacity; 13.64 GiB already "
    "allocated; 3.75 MiB free; 13.78 GiB reserved in total by PyTorch)"
)


def test_raised_torch_cuda_out_of_memory_error():
    exc = raised(lambda: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError(NEW_OOM)))
    assert type(exc).__name__ == "OutOfMemoryError"
    hint = explain(exc)
    assert hint.kind == "oom"
    assert "asked for 2.00 GiB; the GPU has 14.74 GiB, 1.06 GiB free" in hint.cause
    assert "--batch-size auto" in hint.fix
    assert "torch.autocast" in hint.fix
    assert "empty_cache()" in hint.fix
    assert "nvidia-smi" in hint.cause


def test_out_of_memory_recognised_by_class_name_whatever_the_message():
    class OutOfMemoryError(RuntimeError):  # the name is what counts, not torch's class object
        pass

    assert explain(OutOfMemoryError("")).kind == "oom"


@pytest.mark.parametrize("message", [
    OLD_OOM,
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
])
def test_out_of_memory_runtime_error_messages(message):
    hint = explain(RuntimeError(message))
    assert hint.kind == "oom"


def test_old_oom_message_details():
    assert "asked for 20.00 MiB; the GPU has 14.76 GiB, 3.75 MiB free" in explain(RuntimeError(OLD_OOM)).cause


def test_cpu_out_of_memory():
    hint = explain(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 107374182400 bytes. Error code 12 (Cannot allocate memory)"))
    assert hint.kind == "oom" and "RAM" in hint.title and "100.00 GiB" in hint.cause


# ------------------------------------------------------------------ recorded CUDA-only messages

RECORDED = [
    # device: every wording torch has used
    ("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
     "(when checking argument for argument mat1 in method wrapper_CUDA_addmm)", "device", "(cuda:0 and cpu)"),
    ("Expected all tensors to be on the same device, but found at least two devices, cpu and cuda:0! "
     "(when checking argument for argument target in method wrapper_CUDA_nll_loss_forward)", "device", "(cpu and cuda:0)"),
    ("Expected all tensors to be on the same device, but got mat2 is on cpu, different from other tensors on "
     "cuda:0 (when checking argument in method wrapper_CUDA_mm)", "device", "(cpu and cuda:0)"),
    ("Expected all tensors to be on the same device. addmm: expected 'mat1' to be a CPU tensor, but got "
     "tensor on cuda:0", "device", "(cpu and cuda:0)"),
    ("Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same or input "
     "should be a MKLDNN tensor and weight is a dense tensor", "device", "(cpu and cuda)"),
    ("Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same",
     "device", "(cuda and cpu)"),
    ("Expected object of device type cuda but got device type cpu for argument #1 'self' in call to _th_addmm",
     "device", "(cuda and cpu)"),
    ("Expected object of backend CUDA but got backend CPU for argument #2 'mat2'", "device", "(cuda and cpu)"),
    ("Tensor for argument #2 'mat1' is on CPU, but expected it to be on GPU (while checking arguments for addmm)",
     "device", "(cpu and cuda)"),
    ("Input and parameter tensors are not at the same device, found input tensor at cuda:0 and parameter "
     "tensor at cpu", "device", "(cuda:0 and cpu)"),
    ("module must have its parameters and buffers on device cuda:0 (device_ids[0]) but found one of them on "
     "device: cpu", "device", "(cuda:0 and cpu)"),
    ("indices should be either on cpu or on the same device as the indexed tensor (cpu)", "device",
     "tensors on different devices"),
    # shape (torch <= 1.6)
    ("size mismatch, m1: [64 x 784], m2: [512 x 10] at /pytorch/aten/src/TH/generic/THTensorMath.cpp:136",
     "shape", "expects 512 input features but got 784"),
    # dtype
    ("expected scalar type Float but found Double", "dtype", "(Float and Double)"),
    ("expected scalar type Double but found Float", "dtype", "(Double and Float)"),
    ("expected mat1 and mat2 to have the same dtype, but got: double != float", "dtype", "(Double and Float)"),
    ("mat1 and mat2 must have the same dtype, but got Half and Float", "dtype", "(Half and Float)"),
    ("Input type (torch.cuda.DoubleTensor) and weight type (torch.cuda.FloatTensor) should be the same",
     "dtype", "(Double and Float)"),
    ("Found dtype Double but expected Float", "dtype", "(Float and Double)"),
    ("Expected object of scalar type Float but got scalar type Double for argument #2 'mat2' in call to _th_mm",
     "dtype", "(Float and Double)"),
    ("expected scalar type Float but found Long", "dtype", "(Float and Long)"),
    # classification targets
    ("expected scalar type Long but found Float", "dtype", "targets must be integers (Long), not Float"),
    ("Expected object of scalar type Long but got scalar type Float for argument #2 'target' in call to "
     "_thnn_nll_loss_forward", "dtype", "targets must be integers (Long), not Float"),
    ('"nll_loss_forward_reduce_cuda_kernel_2d_index" not implemented for \'Float\'', "dtype",
     "targets must be integers (Long), not Float"),
    # no GPU, GPU checkpoint
    ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver "
     "from http://www.nvidia.com/Download/index.aspx", "no-gpu", "no GPU in this runtime"),
    ("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False. If you are "
     "running on a CPU-only machine, please use torch.load with map_location=torch.device('cpu') to map your "
     "storages to the CPU.", "no-gpu", "a GPU checkpoint loaded where there is no GPU"),
]


@pytest.mark.parametrize("message, kind, in_title", RECORDED, ids=[m[:48] for m, _, _ in RECORDED])
def test_recorded_messages(message, kind, in_title):
    hint = explain(RuntimeError(message))
    assert hint is not None, message
    assert hint.kind == kind
    assert in_title in hint.title


def test_lstm_hidden_state_on_the_wrong_device_shows_how_to_make_h0():
    hint = explain(RuntimeError("Input and hidden tensors are not at the same device, found input tensor at "
                                "cuda:0 and hidden tensor at cpu"))
    assert "device=inputs.device" in hint.fix


# ------------------------------------------------------------------ what gets no hint

@pytest.mark.parametrize("exc", [
    RuntimeError("CUDA error: device-side assert triggered"),
    RuntimeError("The size of tensor a (64) must match the size of tensor b (32) at non-singleton dimension 0"),
    RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn"),
    ValueError("mat1 and mat2 shapes cannot be multiplied (1x2 and 3x4)"),  # right words, wrong class
    RuntimeError("Using a target size (torch.Size([4])) that is different to the input size (torch.Size([4, 1]))"),
    UserWarning("some other warning"),
    KeyError("weight"),
    KeyboardInterrupt(),
], ids=repr)
def test_unknown_errors_give_none(exc):
    assert explain(exc) is None


def test_not_an_exception_gives_none():
    assert explain("mat1 and mat2 shapes cannot be multiplied (1x2 and 3x4)") is None


def test_an_error_raised_from_a_torch_error_is_explained_by_its_cause():
    shape_error = raised(lambda: nn.Linear(512, 10)(torch.randn(2, 784)))

    def step():
        try:
            raise shape_error
        except RuntimeError as exc:
            raise ValueError("training step 3 failed") from exc

    assert explain(raised(step)).kind == "shape"


# ------------------------------------------------------------------ how a hint looks

def test_hint_text_and_html():
    hint = Hint("shape", "a <b> title", "first paragraph\nsecond & last", "x = f(a<b)")
    text = str(hint)
    assert text.splitlines()[0] == "╭─ colabkit hint: a <b> title"
    assert "│ first paragraph" in text and "│ second & last" in text
    assert "│   x = f(a<b)" in text
    assert "colabkit.hints(False)" in text.splitlines()[-1]
    page = hint._repr_html_()
    assert "a &lt;b&gt; title" in page and "second &amp; last" in page and "x = f(a&lt;b)" in page
    assert "<b>" not in page.replace("<b>colabkit hint", "")


def test_long_causes_are_wrapped():
    hint = explain(RuntimeError(OLD_OOM))
    assert all(len(line) <= 92 for line in str(hint).splitlines() if not line.startswith("│   "))


# ------------------------------------------------------------------ scripts: the excepthook

def _hint_count(text: str) -> int:
    return text.count("colabkit hint:")


def test_recognition_needs_no_torch_and_the_switch_silences_the_excepthook():
    code = textwrap.dedent("""
        import sys
        import colabkit._hints.rules   # the submodule first: colabkit.hints must stay the function
        import colabkit
        hint = colabkit.explain(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)"))
        print("KIND", hint.kind, "TORCH LOADED", "torch" in sys.modules)
        colabkit.install_excepthook()
        colabkit.hints(False)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)")
    """)
    proc = run_python(code)
    assert "KIND shape TORCH LOADED False" in proc.stdout, proc.stderr
    assert proc.returncode == 1
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in proc.stderr
    assert _hint_count(proc.stderr) == 0


def test_excepthook_prints_the_hint_after_the_traceback_once():
    code = textwrap.dedent("""
        import sys
        def earlier_hook(etype, value, tb):
            print("EARLIER HOOK RAN", file=sys.stderr)
            sys.__excepthook__(etype, value, tb)
        sys.excepthook = earlier_hook
        import torch, colabkit
        colabkit.install_excepthook()
        colabkit.install_excepthook()   # twice: still one hint
        torch.nn.Linear(512, 10)(torch.randn(4, 784))
    """)
    proc = run_python(code)
    err = proc.stderr
    assert proc.returncode == 1
    assert "EARLIER HOOK RAN" in err
    traceback_at = err.index("Traceback (most recent call last)")
    error_at = err.index("RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)")
    hint_at = err.index("colabkit hint: shape mismatch: a layer expects 512 input features but got 784")
    assert traceback_at < error_at < hint_at
    assert _hint_count(err) == 1


def test_script_warnings_get_their_hint_and_unknown_errors_none():
    code = textwrap.dedent("""
        import torch, colabkit
        colabkit.install_excepthook()
        loss = torch.nn.MSELoss()(torch.randn(8, 1), torch.randn(8))
        print("LOSS COMPUTED", flush=True)
        raise KeyError("no such column")
    """)
    proc = run_python(code)
    err = proc.stderr
    assert "LOSS COMPUTED" in proc.stdout
    warning_at = err.index("UserWarning: Using a target size (torch.Size([8]))")
    hint_at = err.index("colabkit hint: the loss compares tensors of different shapes")
    key_error_at = err.index("KeyError: 'no such column'")
    assert warning_at < hint_at < key_error_at
    assert _hint_count(err) == 1  # the KeyError got none
    assert proc.returncode == 1


def test_hints_switch_is_the_function_even_after_the_submodule_import():
    import colabkit._hints.rules  # noqa: F401
    import colabkit._hints.switch  # noqa: F401

    assert callable(colabkit.hints)
    assert colabkit.hints is colabkit._hints.switch.hints
    assert sys.modules["colabkit._hints.switch"].hints_enabled() is True


# ------------------------------------------------------------------ how the HTML box reads in every theme

PAGES = {"Colab / Jupyter light": (255, 255, 255), "Colab dark": (0x38, 0x38, 0x38)}


def _color(value: str) -> tuple[float, float, float, float]:
    """#rgb, #rrggbb, rgb(...) or rgba(...) -> (r, g, b, alpha)."""
    import re

    value = value.strip().lower()
    if value.startswith("#"):
        digits = value[1:]
        if len(digits) == 3:
            digits = "".join(ch * 2 for ch in digits)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), 1.0)
    numbers = [float(n) for n in re.findall(r"[\d.]+", value)]
    assert value.startswith("rgb") and len(numbers) in (3, 4), value
    return (*numbers[:3], numbers[3] if len(numbers) == 4 else 1.0)


def _luminance(rgb) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb[:3]
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(a, b) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _text_runs(page: str) -> list[dict]:
    """Each piece of text with the styles in force: color, backgrounds (outermost first), font, tags."""
    from html.parser import HTMLParser

    class Runs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack: list[tuple[str, dict]] = []
            self.runs: list[dict] = []

        def handle_starttag(self, tag, attrs):
            style = dict(attrs).get("style") or ""
            props = {}
            for part in style.split(";"):
                if ":" in part:
                    key, value = part.split(":", 1)
                    props[key.strip().lower()] = value.strip()
            self.stack.append((tag, props))

        def handle_endtag(self, tag):
            while self.stack:
                if self.stack.pop()[0] == tag:
                    break

        def handle_data(self, data):
            if not data.strip():
                return
            color = next((p["color"] for _, p in reversed(self.stack) if "color" in p), None)
            font = next((p["font-family"] for _, p in reversed(self.stack) if "font-family" in p), None)
            backgrounds = [p.get("background-color") or p["background"] for _, p in self.stack
                           if "background" in p or "background-color" in p]
            self.runs.append({"text": data, "color": color, "backgrounds": backgrounds, "font": font,
                              "tags": [t for t, _ in self.stack]})

    parser = Runs()
    parser.feed(page)
    return parser.runs


def _over(page_rgb, backgrounds) -> tuple[float, float, float]:
    """The color the text sits on: each background composited over the page, outermost first."""
    r, g, b = page_rgb
    for value in backgrounds:
        cr, cg, cb, alpha = _color(value)
        r, g, b = (cr * alpha + r * (1 - alpha), cg * alpha + g * (1 - alpha), cb * alpha + b * (1 - alpha))
    return (r, g, b)


@pytest.mark.parametrize("page", list(PAGES), ids=list(PAGES))
def test_html_hint_text_is_readable_on_light_and_dark_pages(page):
    hint = explain(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)"))
    runs = _text_runs(hint._repr_html_())
    assert {"colabkit hint", "Fix:", "nn.Linear(784, 10)", "colabkit.hints(False)"} <= {
        word for run in runs for word in ("colabkit hint", "Fix:", "nn.Linear(784, 10)", "colabkit.hints(False)")
        if word in run["text"]}
    for run in runs:
        # an inherited color would be the theme's (light on dark pages), not one chosen for our background
        assert run["color"] is not None, run["text"]
        ratio = _contrast(_color(run["color"]), _over(PAGES[page], run["backgrounds"]))
        assert ratio >= 4.5, (run["text"][:40], run["color"], run["backgrounds"], round(ratio, 2))


def test_html_hint_fix_is_monospace_code():
    hint = Hint("shape", "t", "c", "x = f(a<b)\ny = 2")
    fixes = [run for run in _text_runs(hint._repr_html_()) if "x = f(a<b)" in run["text"]]
    assert len(fixes) == 1
    assert fixes[0]["tags"][-1] == "code" and "pre" in fixes[0]["tags"]
    assert fixes[0]["font"] is not None and fixes[0]["font"].rstrip("'\" ").endswith("monospace")


def test_hint_modules_form_layers_without_private_imports():
    from tests._drive_api_helpers import assert_layered

    assert_layered("colabkit._hints")


# ------------------------------------------------------------------ rendered by a real browser

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if os.path.exists(p)), None)
def _pixels(image) -> list[tuple[int, int, int]]:
    data = image.tobytes()  # RGB
    return [tuple(data[i:i + 3]) for i in range(0, len(data), 3)]


# notebook CSS of the kind that restyles output (inline styles must win over it)
HOSTILE_CSS = "div, p, b, span, pre, code { color: inherit; background: transparent; font-family: serif; }"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")
def test_hint_box_rendered_by_chromium_is_readable_on_light_and_dark_pages(tmp_path):
    """Screenshots (kept in COLABKIT_SCREENSHOTS when set) of the box on a light and a dark page."""
    import shutil
    import subprocess

    from PIL import Image

    from colabkit._hints import rules

    hint = explain(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)"))
    panels = {"light": ("#ffffff", "#000000", 0), "dark": ("#383838", "#d5d5d5", 460)}
    body = "".join(
        f"<div style='position:absolute;left:{x}px;top:0;width:450px;height:600px;background:{page};"
        f"color:{ink}'><div style='padding:10px'>{hint._repr_html_()}</div></div>"
        for page, ink, x in panels.values())
    html_file = tmp_path / "hint.html"
    html_file.write_text(f"<html><head><style>body{{margin:0}} {HOSTILE_CSS}</style></head><body>{body}</body></html>")
    shot = tmp_path / "hint.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=920,600", f"--screenshot={shot}", html_file.as_uri()],
                   check=True, capture_output=True, timeout=120)
    if os.environ.get("COLABKIT_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["COLABKIT_SCREENSHOTS"]) / "hint-light-dark.png")
    image = Image.open(shot).convert("RGB")
    box = _color(rules.HTML_BACKGROUND)[:3]
    border = _color(rules.HTML_BORDER)[:3]

    def near(a, b, tolerance=3):
        return all(abs(x - y) <= tolerance for x, y in zip(a, b))

    for name, (page, _ink, x) in panels.items():
        assert near(image.getpixel((x + 5, 5)), _color(page)[:3]), name  # the page around the box
        top = 10 + 6  # the panel's padding, the box's margin
        assert near(image.getpixel((x + 18, top + 3)), box), (name, image.getpixel((x + 18, top + 3)))  # opaque
        bottom = top
        while near(image.getpixel((x + 11, bottom + 1)), border):  # the border runs the box's height
            bottom += 1
        assert bottom > top + 80, name
        interior = image.crop((x + 16, top, x + 440, bottom))
        darkest = min(_pixels(interior), key=_luminance)
        assert _contrast(darkest, box) >= 4.5, (name, darkest)
        last_line = image.crop((x + 16, bottom - 16, x + 440, bottom))  # the small off-switch line
        assert _contrast(min(_pixels(last_line), key=_luminance), box) >= 4.5, name
