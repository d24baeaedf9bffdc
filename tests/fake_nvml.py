"""A fake of the slice of pynvml the sampler calls: for tests and the overhead benchmark on machines without a GPU."""

from planner.measure.nvml import _NVML_CLOCK_SM, _Mem, _Util


class FakeNvml:
    """The slice of pynvml the sampler calls, returning settable values: for tests and for the
    overhead benchmark on machines without a GPU. Set `.sm_util`, `.mem_util` etc. to change what
    the next sample reads; `.calls` counts utilization reads."""

    NVML_CLOCK_SM = _NVML_CLOCK_SM

    def __init__(self, sm_util=0.0, mem_util=0.0, mem_used_bytes=1e9, power_mw=100e3, sm_clock_mhz=1500.0):
        self.sm_util, self.mem_util = sm_util, mem_util
        self.mem_used_bytes, self.power_mw, self.sm_clock_mhz = mem_used_bytes, power_mw, sm_clock_mhz
        self.calls = 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("fake-gpu", index)

    def nvmlSystemGetDriverVersion(self):
        return "fake-0.0"

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.calls += 1
        return _Util(self.sm_util, self.mem_util)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return _Mem(self.mem_used_bytes)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw

    def nvmlDeviceGetClockInfo(self, handle, clock_type):
        return self.sm_clock_mhz
