# A pvpython client for pv-launch's hand-off (examples/profiles/pvserver.toml):
#   pvpython connect.py [--url=URL]     (else PV_LAUNCH_URL)
# cs://HOST:PORT: dial the server; csrc://HOST:PORT: listen there for the server to dial.
import os
import sys

from paraview.simple import Connect, ReverseConnect, Sphere

url = os.environ.get("PV_LAUNCH_URL", "")
for arg in sys.argv[1:]:
    if arg.startswith("--url="):
        url = arg[len("--url="):]
scheme, _, rest = url.partition("://")
host, _, port = rest.rpartition(":")
if scheme == "csrc":
    ReverseConnect(port)
elif scheme == "cs":
    Connect(host, int(port))
else:
    sys.exit("connect.py: expected cs://HOST:PORT or csrc://HOST:PORT, got %r" % url)
sphere = Sphere(ThetaResolution=16, PhiResolution=16)
sphere.UpdatePipeline()
print("points", sphere.GetDataInformation().GetNumberOfPoints())
