"""What this CPU offers for reduced precision: its flags, and the caps the environment sets.

`MAEAST_CPU_FLAGS` (space- or comma-separated) replaces the flags read from /proc/cpuinfo: a way
to rehearse another CPU class (with oneDNN's `ONEDNN_MAX_CPU_ISA`, ATen's `ATEN_CPU_CAPABILITY`
and FBGEMM's `FBGEMM_ENABLE_INSTRUCTIONS` capping the kernels themselves).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import cache

import torch

FLAGS_ENV = "MAEAST_CPU_FLAGS"

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that leave each kind of unit usable.
_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
              "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
              "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}
_AMX_ISAS = {"AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16",
             "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}
_FBGEMM_NO_VNNI = {"AVX2", "AVX512", "AVX512_256"}  # FBGEMM_ENABLE_INSTRUCTIONS values without VNNI
# the flags worth showing (doctor, benchmarks); the others say nothing about precision
UNIT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "bf16", "i8mm")


@dataclass(frozen=True)
class CpuReport:
    """What this CPU and the environment say about reduced-precision units."""

    arch: str  # platform.machine(), lower case
    model_name: str
    flags: frozenset[str] = field(default_factory=frozenset)  # /proc/cpuinfo flags or Features
    capability: str = ""  # torch.backends.cpu.get_cpu_capability()
    onednn_max_isa: str | None = None
    fbgemm_isa: str | None = None
    flags_overridden: bool = False

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "x86")

    def _isa_allows(self, allowed: set[str]) -> bool:
        return self.onednn_max_isa is None or self.onednn_max_isa in allowed

    @property
    def amx_bf16(self) -> bool:
        return self.x86 and "amx_bf16" in self.flags and self._isa_allows(_AMX_ISAS)

    @property
    def bf16_units(self) -> bool:
        """AMX or AVX512-BF16 usable by oneDNN (x86), or the ARM BF16 extension."""
        if self.x86:
            return self.amx_bf16 or ("avx512_bf16" in self.flags and self._isa_allows(_BF16_ISAS))
        return "bf16" in self.flags

    @property
    def int8_exact(self) -> bool:
        """Whether FBGEMM's int8 products accumulate straight into int32 (AVX512-VNNI): without
        VNNI it sums pairs of u8*s8 products in saturating int16, so activations must use 7 bits."""
        if not self.x86:
            return True
        return "avx512_vnni" in self.flags and (self.fbgemm_isa or "").upper() not in _FBGEMM_NO_VNNI

    @property
    def cpu_class(self) -> str:
        """A short name for the class of this CPU as the kernels may use it."""
        if not self.x86:
            return f"{self.arch} with BF16" if self.bf16_units else self.arch
        if self.amx_bf16:
            return "x86 AMX"
        if self.bf16_units:
            return "x86 AVX512-BF16"
        if "avx512f" in self.flags and self.capability.startswith("AVX512"):
            return "x86 AVX-512" + (" VNNI" if self.int8_exact else "")
        return "x86 AVX2" if "avx2" in self.flags else "x86"

    def summary(self) -> dict:
        """The facts `doctor` and the benchmarks print."""
        return {
            "model": self.model_name,
            "arch": self.arch,
            "class": self.cpu_class,
            "unit_flags": [flag for flag in UNIT_FLAGS if flag in self.flags],
            "flags_overridden": self.flags_overridden,
            "aten_capability": self.capability,
            "ONEDNN_MAX_CPU_ISA": self.onednn_max_isa,
            "FBGEMM_ENABLE_INSTRUCTIONS": self.fbgemm_isa,
            "amx_bf16": self.amx_bf16,
            "bf16_units": self.bf16_units,
            "int8_exact": self.int8_exact,
        }


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo (x86 `flags`, ARM `Features`); where it is
    missing, the x86 units torch's own CPU probes report."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key.lower() in ("model name", "cpu part") and not name:
                    name = value
                elif key.lower() in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported",
                  "avx512_vnni": "_is_vnni_supported"}
        flags = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    return name or platform.processor() or platform.machine(), frozenset(flags)


def cpu_report() -> CpuReport:
    """This CPU as the environment presents it (flag override and kernel caps applied)."""
    name, flags = _cpuinfo()
    override = os.environ.get(FLAGS_ENV)
    if override is not None:
        flags = frozenset(override.replace(",", " ").lower().split())
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return CpuReport(
        arch=platform.machine().lower(),
        model_name=name,
        flags=flags,
        capability=torch.backends.cpu.get_cpu_capability(),
        onednn_max_isa=isa.strip().upper() if isa else None,
        fbgemm_isa=os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS"),
        flags_overridden=override is not None,
    )
