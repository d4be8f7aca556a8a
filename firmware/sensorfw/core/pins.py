# Pin rules of config.json, by role. Loaded only by core/config.py while it validates,
# then unloaded. The pin facts are data in the board profiles (boards/esp32_devkit.py,
# boards/pico_w.py); they were checked against:
#   MicroPython ports/esp32/machine_pin.c  GPIO 34 and up are input only ("pin can only be input")
#   MicroPython ports/esp32/machine_adc.c  ADC1 channels on GPIO 32-39
#   ESP-IDF ADC documentation              ADC2 (GPIO 0, 2, 4, 12-15, 25-27) is used by the
#                                          Wi-Fi driver; ADC2 reads fail while Wi-Fi runs
#   ESP-IDF GPIO documentation, ESP32-WROOM-32 datasheet   GPIO 6-11 are the SPI flash;
#                                          34-39 have no pull-up/down; 37/38 not on the module
#   MicroPython ports/esp32/machine_i2c.c  I2C(0) and I2C(1), any pins (GPIO matrix)
#   MicroPython ports/rp2/boards/RPI_PICO_W/pins.csv   GP0-22, GP26-28 and "LED" only
#   MicroPython ports/rp2/machine_i2c.c    SDA even / SCL odd pins, bus id = bit 1 of the pin
# Every message names the key, the pin and why, and lists the pins that would do.


def _list(pins):
    return ", ".join([str(p) for p in pins])


def _bad(p, key, v, allowed, role, dflt=False):  # noqa: PLR0917
    """Why pin v cannot serve `role` on profile p, as a message (allowed: the pins that can)."""
    fix = "use one of " + _list(allowed)
    post = ""
    if v in p.RESERVED_PINS:
        why = p.RESERVED_WHY
        post = " (never usable)"
    elif v not in p.GPIO_PINS:
        why = "not a usable GPIO"
    elif role == "adc" and v in p.ADC2_PINS:
        why = "an ADC2 pin"
        post = ", unusable while Wi-Fi is on"
    elif role == "adc":
        why = "not an ADC input"
    elif v in p.INPUT_ONLY_PINS and role == "pull":
        why = "input-only without internal pull-up/down"
        fix = "leave '%s.pull' out and fit a resistor, or %s" % (key.rsplit(".", 1)[0], fix)
    elif v in p.INPUT_ONLY_PINS:
        why = "input-only (no output driver)"
    else:
        why = "not usable for " + role
    return "'%s' = %r%s is %s on %s%s: %s" % (key, v, " (the board default)" if dflt else "", why, p.NAME, post, fix)


def _i2c(p, key, bus, outs):
    bid = bus["id"]
    if bid not in p.I2C_IDS:
        return "'%s.id' = %r is not an I2C bus of %s: use one of %s" % (key, bid, p.NAME, _list(p.I2C_IDS))
    for end, table in (("scl", p.I2C_SCL), ("sda", p.I2C_SDA)):
        v = bus[end]
        dflt = v < 0
        if dflt:
            v = p.I2C_DEFAULT[end]
        allowed = outs if table is None else table[bid]
        if v in allowed:
            continue
        if table is not None:
            for other in p.I2C_IDS:
                if v in table[other]:
                    return (
                        "'%s.%s' = %r%s is an I2C%d %s pin on %s, but '%s.id' is %d: set i2c.id to %d or use one of %s"
                        % (
                            key,
                            end,
                            v,
                            " (the board default)" if dflt else "",
                            other,
                            end.upper(),
                            p.NAME,
                            key,
                            bid,
                            other,
                            _list(allowed),
                        )
                    )
        return _bad(p, key + "." + end, v, allowed, "I2C " + end.upper(), dflt)
    return None


def _roles(cfg, p):
    outs = tuple([g for g in p.GPIO_PINS if g not in p.INPUT_ONLY_PINS])
    for i in range(len(cfg["sensors"])):
        s = cfg["sensors"][i]
        k = "sensors[%d]" % i
        t = s["type"]
        if t == "mpu6050":
            e = _i2c(p, k + ".i2c", s["i2c"], outs)
            if e:
                return e
            continue
        v = s["pin"]
        if t == "analog":
            if v not in p.ADC_PINS:
                return _bad(p, k + ".pin", v, p.ADC_PINS, "adc")
        elif s["pull"] is not None:
            if v not in outs:  # pull-up/down: every pin with an output driver has them
                return _bad(p, k + ".pin", v, outs, "pull")
        elif v not in p.GPIO_PINS:
            return _bad(p, k + ".pin", v, p.GPIO_PINS, "input")
    for i in range(len(cfg["outputs"])):
        v = cfg["outputs"][i]["pin"]
        if v not in outs and v not in p.NAMED_PINS:
            return _bad(p, "outputs[%d].pin" % i, v, outs + p.NAMED_PINS, "output")
    return None


def _shared(cfg, p):
    """No pin serves two purposes; sensors on one I2C bus share its pins, at distinct addresses."""
    used = {}
    buses = {}
    uses = []
    for i in range(len(cfg["sensors"])):
        s = cfg["sensors"][i]
        k = "sensors[%d]" % i
        if s["type"] != "mpu6050":
            uses.append((k + ".pin", s["pin"]))
            continue
        b = s["i2c"]
        scl = b["scl"]
        sda = b["sda"]
        if p is not None:
            scl = p.I2C_DEFAULT["scl"] if scl < 0 else scl
            sda = p.I2C_DEFAULT["sda"] if sda < 0 else sda
        prev = buses.get(b["id"])
        if prev is not None:
            if prev[1] != scl or prev[2] != sda:
                return (
                    "'%s.i2c' puts I2C bus %d on scl %r / sda %r, but '%s.i2c' put it on scl %r / sda %r: a bus has one pair of pins: give the same pins or another i2c.id"
                    % (
                        k,
                        b["id"],
                        scl,
                        sda,
                        prev[0],
                        prev[1],
                        prev[2],
                    )
                )
            if s["addr"] in prev[3]:
                return (
                    "'%s.addr' = 0x%02x is taken on I2C bus %d by an earlier sensor: set addr to the other of 0x68 / 0x69 (pin AD0) or use another bus"
                    % (
                        k,
                        s["addr"],
                        b["id"],
                    )
                )
            prev[3].append(s["addr"])
            continue
        buses[b["id"]] = (k, scl, sda, [s["addr"]])
        uses.append((k + ".i2c.scl", scl))
        uses.append((k + ".i2c.sda", sda))
    for i in range(len(cfg["outputs"])):
        uses.append(("outputs[%d].pin" % i, cfg["outputs"][i]["pin"]))
    for key, v in uses:
        if v == -1:
            continue  # board default pins, unknown without a profile
        if v in used:
            return "'%s' = %r is already used by '%s': one pin, one purpose" % (key, v, used[v])
        used[v] = key
    return None


def error(cfg, profile):
    """The first pin problem of a validated configuration as a message, or None.
    profile None (simulation): only the no-pin-twice rule."""
    if profile is not None:
        e = _roles(cfg, profile)
        if e:
            return e
    return _shared(cfg, profile)
