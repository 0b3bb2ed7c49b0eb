"""What this CPU can do, read once: the one module that reads /proc/cpuinfo and asks torch for its capability.

Every choice of a kernel path asks here: the prepacked oneDNN bf16 linear, the fbgemm int8 range, the int4 layout
that prompts dequantize from, what `--dtype auto` picks, the thread count, and the fingerprint of files built for
this machine. The machines we run on differ (Sapphire Rapids with AMX, Zen 4/5 with AVX-512, Zen 3 and most laptops
with AVX2 only), so nothing is assumed.

The instruction set can be capped, to exercise the AVX2 paths on a bigger machine:
- CHATCLI_CPU_ISA=avx2 (or avx512, default) caps what chatcli believes, so its fallback choices are taken;
- ATEN_CPU_CAPABILITY=avx2 caps torch's own kernels (and inductor's generated code);
- ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN's.
chatcli takes the lowest level any of them names, so it never asks a library for more than that library may use.
fbgemm (the dynamic int8 kernels) has no such switch: under a cap it still runs its AVX-512 kernels, and only
chatcli's choice of how to call it follows the cap.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("default", "avx2", "avx512")  # torch's dispatch levels on x86, lowest first
# Flags a CPU of each level cannot have: an AVX2-capped run behaves as a Zen 3 does (AVX2 and FMA, nothing newer).
_ABOVE = {
    "avx512": (),
    "avx2": ("avx512", "amx", "avx_vnni", "avx_ne_convert", "avx_ifma"),
    "default": ("avx512", "amx", "avx_vnni", "avx_ne_convert", "avx_ifma", "avx2", "fma", "f16c", "avx"),
}


@dataclass(frozen=True)
class CPU:
    """The facts kernel choices depend on. flags are /proc/cpuinfo's, less those above the capped level."""

    model: str
    arch: str
    level: str  # "avx512", "avx2" or "default" on x86; "default" elsewhere
    torch_capability: str  # what torch dispatches to ("AVX512", "AVX2", "DEFAULT", ...)
    flags: frozenset[str]
    capped_by: tuple[str, ...]  # the variables that lowered the level, for the bench header and the notes

    def has(self, *names: str) -> bool:
        """True when every flag in NAMES is present (after the cap)."""
        return all(n in self.flags for n in names)

    @property
    def native_bf16(self) -> bool:
        """bf16 dot products in hardware (AVX512-BF16 or AMX): only then do bf16 matmuls beat float32."""
        return self.has("avx512_bf16") or self.has("amx_bf16")

    @property
    def onednn_bf16(self) -> bool:
        """oneDNN's condition for its bf16 reorder and matmul: AVX512 BW/VL/DQ, or AVX-NE-CONVERT."""
        return self.has("avx512bw", "avx512vl", "avx512dq") or self.has("avx_ne_convert")

    @property
    def int8_dot(self) -> bool:
        """VNNI int8 dot products (AVX512-VNNI), which fbgemm uses: exact u8 x s8 sums. Without them its AVX2 and
        AVX-512 kernels pair products into saturating 16-bit sums, so activations must keep to 7 bits."""
        return self.has("avx512_vnni")

    @property
    def summary(self) -> str:
        """One line for the bench header: model, level and the flags that decide our kernels."""
        keys = ("avx2", "fma", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx_ne_convert", "amx_bf16")
        present = [k for k in keys if k in self.flags] or ["no SIMD flags read"]
        cap = f", capped by {'+'.join(self.capped_by)}" if self.capped_by else ""
        return f"{self.model} ({self.arch}, torch {self.torch_capability}, level {self.level}{cap}; {' '.join(present)})"

    def as_dict(self) -> dict:
        """The facts as JSON can write them (the bench's output)."""
        return {"model": self.model, "arch": self.arch, "level": self.level, "torch_capability": self.torch_capability,
                "flags": sorted(self.flags & set(_KEY_FLAGS)), "capped_by": list(self.capped_by)}


_KEY_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")


def _read_cpuinfo() -> tuple[str, set[str]]:
    """The model name and the flags of the first processor in /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown CPU", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or "unknown CPU", flags


def _level_of(name: str | None) -> str | None:
    """The level a variable's value names ("AVX2", "avx512_core_amx", "sse41", ...), or None when unset or unknown."""
    if not name:
        return None
    v = name.strip().lower()
    if v.startswith("avx512") or v.startswith("avx10"):
        return "avx512"
    if v.startswith("avx2"):
        return "avx2"
    if v in ("default", "sse41", "sse42", "avx", "none"):
        return "default"
    return None


@functools.cache
def info() -> CPU:
    """This machine's CPU, read once per process."""
    import torch

    model, flags = _read_cpuinfo()
    arch = platform.machine()
    torch_cap = torch.backends.cpu.get_cpu_capability()  # follows ATEN_CPU_CAPABILITY
    if arch not in ("x86_64", "AMD64"):
        return CPU(model, arch, "default", torch_cap, frozenset(flags), ())
    hardware = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"
    level, capped_by = hardware, []
    torch_label = "ATEN_CPU_CAPABILITY" if os.environ.get("ATEN_CPU_CAPABILITY") else "torch's dispatch"
    for var, named in (("CHATCLI_CPU_ISA", _level_of(os.environ.get("CHATCLI_CPU_ISA"))),
                       (torch_label, _level_of(torch_cap)),
                       ("ONEDNN_MAX_CPU_ISA", _level_of(os.environ.get("ONEDNN_MAX_CPU_ISA")))):
        if named is not None and LEVELS.index(named) < LEVELS.index(hardware):
            level = min(level, named, key=LEVELS.index)
            capped_by.append(var)
    if level != hardware:
        flags = {f for f in flags if not f.startswith(_ABOVE[level])}
    return CPU(model, arch, level, torch_cap, frozenset(flags), tuple(capped_by))


@functools.cache
def onednn_bf16_pack() -> bool:
    """True when oneDNN's prepacked bf16 linear runs here: the CPU must qualify, and the call is tried once, since a
    virtual machine may report flags that oneDNN then refuses."""
    if not info().onednn_bf16:
        return False
    import torch

    try:
        w = torch.ones(16, 16, dtype=torch.bfloat16)
        x = torch.ones(1, 16, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return bool(torch.equal(y.float(), torch.full((1, 16), 16.0)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def int4_block_n() -> int:
    """Output rows per block in the layout torch's CPU int4 kernel packs for its dispatch level (64 for AVX-512,
    32 for AVX2); the caller checks the layout on a known matrix before trusting it."""
    return {"AVX512": 64, "AVX2": 32}.get(info().torch_capability, 16)


def inductor_simdlen() -> int | None:
    """The vector width inductor's generated code may use: None (its own choice, which follows ATEN_CPU_CAPABILITY)
    unless chatcli's level was capped below what torch dispatches to, then the capped level's width (1: scalar)."""
    c = info()
    if _level_of(c.torch_capability) in (None, c.level):
        return None
    return {"avx2": 256, "default": 1}.get(c.level)


def auto_dtype() -> str:
    """What `--dtype auto` loads: bfloat16 where the CPU multiplies it natively and oneDNN packs it, else float32
    (emulated bf16 is slower than float32 there and still loses precision)."""
    return "bfloat16" if info().native_bf16 and onednn_bf16_pack() else "float32"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fingerprint() -> list[str]:
    """What files built for this machine depend on: the model, the flags and the level kernels were chosen for."""
    cpu = info()
    return [cpu.model, cpu.arch, cpu.level, cpu.torch_capability, " ".join(sorted(cpu.flags))]


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (what can be used without swapping), or None where that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
