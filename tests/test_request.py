"""ovmfgen.request: the build options checked and normalised into a Request."""

from __future__ import annotations

import pytest

from ovmfgen.request import make_request
from ovmfgen.errors import OvmfgenError


def test_request_normalisation() -> None:
    r = make_request("xen-pvh", target="release", fd_size="4m", defines=["B=2", "A"], features=["shell=false"],
                     jobs="3")
    assert (r.target, r.fd_size, r.jobs) == ("RELEASE", 4, 3)
    assert r.defines == (("A", "TRUE"), ("B", "2"))
    assert r.features == (("shell", "false"),)
    assert make_request("xen-pvh", defines=["FD_SIZE_1MB=TRUE"]).fd_size == 1
    assert make_request("xen-pvh", features=["fd_size=4"]).fd_size == 4
    for kw in ({"target": "FAST"}, {"fd_size": "3M"}, {"defines": ["1X=2"]}, {"defines": ["A=b c"]},
               {"defines": ["A=b=c"]}, {"fd_size": "2M", "defines": ["FD_SIZE_4MB=TRUE"]}, {"jobs": "0"}):
        with pytest.raises(OvmfgenError):
            make_request("xen-pvh", **kw)
