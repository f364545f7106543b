"""Every module-level name a ``@triton.jit`` function reads is one the Triton compiler accepts.

The compiler refuses a plain global (``NameError: Cannot access global variable ...``) while the CPU interpreter
used by the kernel tests here accepts it, so a kernel can pass every CPU check and fail its first GPU compile
(it happened: ``EMPTY`` in ``rails.kernels.mol_topk_kernel``). This test applies the compiler's rule to the
source of each jit function: a global must be a module, a jit function, a ``tl.constexpr``, a Triton dtype or
a ``triton.language`` object.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
from types import ModuleType

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

import rails.kernels  # noqa: E402


def _kernel_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.iter_modules(rails.kernels.__path__)]
    return [importlib.import_module(f"rails.kernels.{name}") for name in sorted(names)]


def _jit_functions(module: ModuleType) -> list[tuple[str, object]]:
    jit_type = triton.runtime.JITFunction
    return [
        (name, obj)
        for name, obj in vars(module).items()
        if isinstance(obj, jit_type)
        and getattr(obj, "fn", None) is not None
        and obj.fn.__module__ == module.__name__
    ]


def _allowed_global(value: object) -> bool:
    """The Triton code generator's rule for a global read inside a jit function."""
    return (
        isinstance(value, (ModuleType, triton.runtime.JITFunction, tl.constexpr, tl.dtype))
        or getattr(value, "__triton_builtin__", False)
        or getattr(value, "__module__", "").startswith("triton.language")
    )


def _global_reads(source: str) -> set[str]:
    """Names loaded in a function's body that are neither its arguments nor assigned in it (so: globals)."""
    func = ast.parse(textwrap.dedent(source)).body[0]
    local = {arg.arg for arg in func.args.args + func.args.kwonlyargs}
    loads: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else local).add(node.id)
    return loads - local


MODULES = _kernel_modules()


def test_kernel_modules_define_jit_functions():
    found = {module.__name__: len(_jit_functions(module)) for module in MODULES}
    assert found["rails.kernels.mol_topk_kernel"] > 0, found
    assert any(count > 0 for name, count in found.items() if "hstu" in name), found


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_jit_functions_read_only_constexpr_globals(module):
    bad = []
    for name, jit_fn in _jit_functions(module):
        scope = jit_fn.fn.__globals__
        for read in sorted(_global_reads(inspect.getsource(jit_fn.fn))):
            if read in scope and not _allowed_global(scope[read]):
                bad.append(f"{module.__name__}.{name} reads {read} = {scope[read]!r}")
    assert not bad, "globals the Triton compiler refuses (wrap them in tl.constexpr):\n" + "\n".join(bad)


def test_the_rule_catches_a_plain_global():
    """The check itself can fail: a plain int global is reported, a constexpr one and a module are not."""
    scope = {"PLAIN": 3, "WRAPPED": tl.constexpr(3), "tl": tl}
    source = "def f(x):\n    y = x + PLAIN\n    return tl.where(y > 0, y, WRAPPED)\n"
    reads = _global_reads(source)
    assert reads == {"PLAIN", "WRAPPED", "tl"}
    assert [name for name in sorted(reads) if not _allowed_global(scope[name])] == ["PLAIN"]


def test_hstu_kernels_take_float_settings_as_compile_time_constants() -> None:
    """A Python float given to a kernel at run time is typed fp32 by Triton but fp64 by Inductor.

    Under ``torch.compile`` (``model.compile_encoder=true``) Inductor launches the HSTU kernels itself and typed
    ``inv_normalizer`` as fp64, which turned the backward's float32 accumulator into fp64 and failed the
    compile on an H200 (``Loop-carried variable ds_sum has initial type fp32 but is re-assigned to fp64``).
    Every float the launcher passes must therefore be a ``tl.constexpr`` of each kernel that receives it.
    """
    import torch

    from rails.kernels import hstu_attention_backward, hstu_attention_forward
    from rails.kernels.hstu_attention_launch import HSTULaunch, HSTUSequences, kernel_arguments

    q = torch.zeros(1, 8, 2, 4)
    seq = HSTUSequences(
        torch.zeros(1, 8, dtype=torch.int64),
        torch.zeros(1, 8, dtype=torch.int64),
        torch.full((1,), 8),
        211.0,
        0.301,
    ).prepared()
    tables = (torch.zeros(16), torch.zeros(129))
    _, keywords = kernel_arguments(
        q, q, q, q, tables, seq, HSTULaunch(block_m=16, block_n=16, num_warps=4, num_stages=1)
    )
    floats = sorted(name for name, value in keywords.items() if isinstance(value, float))
    assert floats == ["inv_normalizer", "time_bucket_divisor"]
    kernels = [
        hstu_attention_forward._hstu_fwd,
        hstu_attention_backward._hstu_bwd_dkdv,
        hstu_attention_backward._hstu_bwd_dq,
        hstu_attention_backward._hstu_bwd_bias,
    ]
    for kernel in kernels:
        params = {param.name: param.is_constexpr for param in kernel.params}
        for name in floats:
            assert params.get(name) is True, f"{kernel.fn.__name__}: {name} must be a tl.constexpr"
