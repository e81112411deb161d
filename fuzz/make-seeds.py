#!/usr/bin/env python3
"""Write the committed seed corpus of each fuzz target into fuzz/seeds/<target>/.

Hand-made valid inputs (and a few near misses): real resource URIs, launch-channel lines,
the handshake messages a real peer sends (built from the wire formats documented in
transport/src/handshake/), the repository's example profiles and .pvsc files, ssh and git
prompts. Run it from anywhere; it replaces the seed directories it writes.
"""
import hashlib
import pathlib
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
SEEDS = FUZZ / "seeds"


def write(target, items):
    out = SEEDS / target
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, data in items:
        if isinstance(data, str):
            data = data.encode()
        (out / name).write_bytes(data)


# --- resource URIs -------------------------------------------------------------------------
URIS = [
    "builtin:", "cs://localhost", "cs://login1.example.org:11111", "cs://127.0.0.1:4242",
    "cs+tls://[::1]:5000", "CS://Host:1", "csrc://", "csrc://:4444", "csrc+tls://:11111",
    "csrc://login1.example.org:11111", "cdsrs://ds:1//rs:2", "cdsrs://ds:1/rs:2",
    "cdsrs+tls://a//b", "cdsrsrc+tls://:1//:2", "cdsrsrc:////", "cs://[fe80::1%25eth0]:7",
    "cs://host:70000", "cs://ho st",
]
write("resource", [(f"uri-{i:02}", u) for i, u in enumerate(URIS)])

# --- launch-channel lines ------------------------------------------------------------------
HEX = "0123456789abcdef" * 4
write("launch_lines", [
    ("ready", "pv-launch-ready v1 port=11111 handshake=native protocol=1\n"),
    ("ready-tls", f"pv-launch-ready v1 port=40841 handshake=native protocol=1 tls-sha256={HEX}\n"),
    ("ready-paraview", "pv-launch-ready v1 port=0 handshake=paraview later=field\r\n"),
    ("secrets", f"pv-launch-secrets v1 token={HEX}\n"),
    ("secrets-mtls", f"pv-launch-secrets v1 token={HEX} client-cert-sha256={HEX.upper()}\n"),
    ("secrets-v9", "pv-launch-secrets v9 token=00\n"),
])

# --- native handshake (transport/src/handshake/native.rs) ---------------------------------
# Setup bytes: flags (bit 0 acceptor, bit 1 server role, bit 2 connect id 4242, bit 3 no
# room, bit 4 versions 1..=3), pipe size exponent.
def native(kind, payload):
    return b"PVLN" + bytes([kind]) + struct.pack(">H", len(payload)) + payload

def hello(lo, hi, role, connect_id=0):
    return native(1, struct.pack(">HHBQ", lo, hi, role, connect_id) + bytes(range(32)))

PROOF = native(2, hashlib.sha256(b"not the token").digest())
write("handshake_native", [
    # We accept (server) a client's HELLO and a (wrong) proof.
    ("acceptor-client-hello", bytes([0b0011, 12]) + hello(1, 1, 1) + PROOF),
    ("acceptor-connect-id", bytes([0b0111, 3]) + hello(1, 2, 1, 4242) + PROOF),
    ("acceptor-no-room", bytes([0b1011, 15]) + hello(1, 1, 1) + PROOF),
    # We dial (client) a server that picks version 1, then proves (wrongly).
    ("dialler-server-hello", bytes([0b0000, 12]) + hello(1, 1, 2) + PROOF),
    ("dialler-versions", bytes([0b10000, 0]) + hello(3, 3, 2) + PROOF),
    # Rejects: version (with the peer's range), role, connect id, token, busy.
    ("dialler-reject-version", bytes([0, 8]) + native(3, bytes([1]) + struct.pack(">HH", 2, 4))),
    ("dialler-reject-role", bytes([0, 8]) + native(3, bytes([2]))),
    ("dialler-reject-connect-id", bytes([0, 8]) + native(3, bytes([3]) + struct.pack(">Q", 7))),
    ("dialler-reject-token", bytes([0, 8]) + hello(1, 1, 2) + native(3, bytes([4]))),
    ("dialler-reject-busy", bytes([0, 8]) + hello(1, 1, 2) + native(3, bytes([5]))),
    ("acceptor-tls-hello", bytes([1, 8]) + bytes.fromhex("160301") + b"\x00" * 8),
])

# --- ParaView handshake (transport/src/handshake/paraview.rs) -----------------------------
# Setup bytes: flags (bit 0 acceptor, bit 1 server role, bit 2 connect id 4242, bit 3 no
# room, bit 4 we send big-endian, bit 5 64-bit ids, bit 6 32-byte string limit), pipe size.
DEBIAN_HASH = b"5e7a24e1e7033d8c49830a3775623523"

def frames(order, hash_=DEBIAN_HASH, ids=1):
    """Layer 1 as a peer sends it, in byte order `order` ('<' or '>')."""
    flag = b"\x01" if order == ">" else b"\x00"
    i32 = lambda v: struct.pack(order + "i", v)
    frame = lambda tag, payload: i32(tag) + i32(len(payload)) + payload
    layer1 = (frame(0x3C3C3C3C, flag) + frame(0x3E3E3E3E, i32(100))
              + frame(0x3F3F3F3F, hash_ + b"\0") + frame(0x3D3D3D3D, i32(ids)))
    return layer1, i32, frame

def dialler_says(order, string, **kw):
    layer1, i32, frame = frames(order, **kw)
    s = string + b"\0"
    return layer1 + frame(99991, i32(len(s))) + frame(99991, s)

def acceptor_says(order, verdict, **kw):
    layer1, i32, frame = frames(order, **kw)
    return layer1 + frame(99990, i32(verdict))

PV = b"paraview-5.11.renderingbackend.opengl2"
PV_ID = b"paraview-5.11.connect_id.4242.renderingbackend.opengl2"
write("handshake_paraview", [
    ("acceptor-ok", bytes([0b0100011, 12]) + dialler_says("<", PV)),
    ("acceptor-ok-big-endian", bytes([0b0110011, 2]) + dialler_says(">", PV)),
    ("acceptor-connect-id", bytes([0b0100111, 12]) + dialler_says("<", PV_ID)),
    ("acceptor-other-version", bytes([0b0100001, 12]) + dialler_says("<", b"paraview-5.13.renderingbackend.opengl2")),
    ("acceptor-other-id", bytes([0b0100101, 12]) + dialler_says("<", b"paraview-5.11.connect_id.7.renderingbackend.opengl2")),
    ("acceptor-other-backend", bytes([0b0100001, 12]) + dialler_says("<", b"paraview-5.11.renderingbackend.egl")),
    ("acceptor-no-room", bytes([0b0101001, 12]) + dialler_says("<", PV)),
    ("acceptor-long-string", bytes([0b1100001, 12]) + dialler_says("<", PV_ID)),
    ("acceptor-other-hash", bytes([0b0100001, 12]) + dialler_says("<", PV, hash_=b"0" * 32)),
    ("dialler-ok", bytes([0b0100000, 12]) + acceptor_says("<", 0)),
    ("dialler-ok-big-endian", bytes([0b0010000, 0]) + acceptor_says(">", 0, ids=0)),
    *[(f"dialler-verdict-{c}", bytes([0b0100000, 12]) + acceptor_says("<", c)) for c in (1, 2, 3, 4, 99)],
])

# --- profiles ------------------------------------------------------------------------------
write("profile_toml", [(p.name, p.read_bytes()) for p in sorted((ROOT / "examples/profiles").glob("*.toml"))])
# Found by fuzzing: the shape of small .pvsc files that loaded but did not import, or
# made the loader panic.
PVSC_SHAPE = """<Servers>
 <Server name='s' resource='cs://localhost:11111'>
  <CommandStartup>
   <Options>{options}</Options>
   <Command exec='echo' {attrs}><Arguments><Argument value='{arg}'/></Arguments></Command>
  </CommandStartup>
 </Server>
</Servers>
"""

# Found by fuzzing: repeated <Set> names and <Case> values (the import wrote them twice).
REPEATED_SETS = """<Servers>
  <Server name="s" resource="cs://localhost:11111">
    <CommandStartup>
      <Options>
        <Set name="MODE" value="first"/>
        <Set name="MODE" value="last"/>
        <Switch name="PV_CLIENT_PLATFORM">
          <Case value="Linux"><Set name="TERM" value="a"/><Set name="TERM" value="b"/><Set name="odd.name" value="x"/></Case>
          <Case value="Linux"><Set name="TERM" value="never"/></Case>
        </Switch>
      </Options>
      <Command exec="echo"><Arguments><Argument value="$MODE$"/><Argument value="$TERM$"/></Arguments></Command>
    </CommandStartup>
  </Server>
</Servers>
"""
write("profile_pvsc", [(p.name, p.read_bytes()) for p in sorted((ROOT / "launcher/tests/data/pvsc-corpus").glob("*.pvsc*"))]
      + [("regress-repeated-sets.pvsc", REPEATED_SETS)]
      + [(f"regress-{name}.pvsc", PVSC_SHAPE.format(attrs=attrs, options=options, arg=arg))
         for name, attrs, options, arg in [
             ("empty-enumeration", "", "<Option name='Q'><Enumeration default='x'></Enumeration></Option>", "$Q$"),
             ("control-characters", "", "", "$a&#10;[x]&#10;b$ $c&#127;$"),
             ("huge-delay", "delay='5e97'", "", "x"),
             ("inf-process-wait", "process_wait='inf'", "", "x"),
             ("switch-without-case", "", "<Switch name='PV_CLIENT_PLATFORM'/>", "x"),
         ]])

# --- ParaView command lines ----------------------------------------------------------------
# NUL-separated parts; `=NAME=value` defines a variable, then exec, then arguments.
write("command_line", [
    ("ssh-reverse", "=PV_SERVER_PORT=11111\0=HOST=login1\0ssh\0-t\0-R\0$PV_SERVER_PORT$:localhost:$PV_SERVER_PORT$\0$HOST$\0pvserver --reverse-connection"),
    ("empty-value", "=TERM_ARG3=\0xterm\0-e\0$TERM_ARG3$\0ssh"),
    ("spaces", "=ARGS=-n4 -pdebug\0mpiexec\0$ARGS$\0\"quoted arg\"\0a \"\"\"b\"\"\" c"),
    ("windows", "cmd.exe\0/C\0start\0cmd.exe\0/C\0\"C:\\Program Files\\PuTTY\\plink.exe\"\0-ssh"),
    ("self-reference", "=A=x$A$\0run\0$A$"),
    ("loop", "=A=$B$\0=B=$A$\0run\0$A$"),
    # Found by fuzzing: an empty name whose value brings `$$` back grew the line for long.
    ("regress-growing-empty-name", "=A=$$B\0==A=$$B\x10B=$A$\0run\0$A$"),
])

# --- askpass bridge (askpass/src/bridge.rs) ------------------------------------------------
# A mode byte (bit 0: repeat past the 64 KiB limit), then the line.
write("askpass_bridge", [
    ("request", b"\0" + b'{"v":1,"prompt":"alice@host\'s password: ","kind":"password","echo":false,"host":"alice@host","fingerprint":null}\n'),
    ("request-host-key", b"\0" + b'{"v":1,"prompt":"The authenticity of host \'h (127.0.0.1)\' can\'t be established.\\nAre you sure you want to continue connecting (yes/no/[fingerprint])? ","kind":"host_key","echo":true,"host":"h (127.0.0.1)","fingerprint":"SHA256:abc"}\n'),
    ("reply-answer", b"\0" + b'{"v":1,"answer":"s3cret"}\n'),
    ("reply-cancel", b"\0" + b'{"v":1,"cancel":true}\r\n'),
    ("reply-both", b"\0" + b'{"v":1,"answer":"x","cancel":true}\n'),
    ("version-2", b"\0" + b'{"v":2,"answer":"x"}\n'),
    ("too-long", b"\1" + b'{"v":1,"answer":"aaaaaaaa'),
])

# --- askpass prompts (askpass/src/classify.rs) ---------------------------------------------
# A hint byte (0 none, 1 confirm, 2 notify), then the prompt.
PROMPTS = [
    (0, "alice@host's password: "),
    (0, "Enter passphrase for key '/home/alice/.ssh/id_ed25519': "),
    (0, "The authenticity of host 'gw.example.org (192.0.2.1)' can't be established.\nED25519 key fingerprint is SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU.\nAre you sure you want to continue connecting (yes/no/[fingerprint])? "),
    (0, "Please type 'yes', 'no' or the fingerprint: "),
    (0, "(alice@gw) Verification code: "),
    (0, "Username for 'https://github.com': "),
    (0, "Password for 'https://alice@github.com': "),
    (0, "Enter PIN for ECDSA-SK key /home/alice/.ssh/id_ecdsa_sk: "),
    (0, "Again:"),
    (1, "Allow use of key /home/alice/.ssh/id_ed25519?\nKey fingerprint SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU."),
    (2, "Confirm user presence for key ED25519-SK SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"),
]
write("askpass_classify", [(f"prompt-{i:02}", bytes([h]) + p.encode()) for i, (h, p) in enumerate(PROMPTS)])
