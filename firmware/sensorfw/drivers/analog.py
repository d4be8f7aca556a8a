# Analog channel (ADC): one int16 DATA channel per ADC input.
#
# read_u16() gives 0..65535 on every MicroPython port; the ring stores
# raw = u16 - 32768 so it fits int16, and the BIRTH offset undoes the shift:
#   physical = raw * scale + (offset + 32768 * scale)


class AnalogChannel:
    width = 1
    needs_soft = False  # ADC reads are safe in a hard interrupt (ESP32, RP2040)

    def __init__(self, adc, name, unit="V", scale=3.3 / 65535, offset=0.0):
        self.adc = adc
        self._read_u16 = adc.read_u16  # bound once: no allocation per read
        self.name = name
        self.unit = unit
        self.scale = scale
        self.offset = offset

    def read(self, vals, off):
        """Store one reading at vals[off]. Allocates nothing."""
        vals[off] = self._read_u16() - 32768

    def channels(self, rate_hz, sample_type):
        return [(self.name, self.unit, self.scale, self.offset + 32768 * self.scale, sample_type, rate_hz)]
