"""Reads a ghz JSON configuration (deploy/ghz/*.json) into the streams tools/loadgen
sends: the same call data, so that one file drives both tools.

A Generate config's BatchedGenerationRequest messages become one GenerateStream call per
request text (TTFT and ITL exist only for streams); a GenerateStream config's messages are
sent as they are; a Tokenize config has no tokens to time and is refused."""

import ipaddress
import json
import pathlib

from google.protobuf import json_format

from . import stubs

ROOT = stubs.ROOT
SERVICE = "fmaas.GenerationService"


class WorkloadError(Exception):
    pass


def is_loopback(host_port):
    host = host_port.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_target(config_host, cli_host):
    """The address to call: the command line's, else the config's if it is loopback.

    loadgen speaks to loopback, or to a host someone named on the command line: a
    config file copied from elsewhere cannot point it at a production server."""
    if cli_host:
        return cli_host
    if not config_host:
        return "127.0.0.1:8033"
    if not is_loopback(config_host):
        raise WorkloadError(
            f"the config's host {config_host!r} is not loopback; name a remote host on the "
            "command line (--host) to load it")
    return config_host


def read_config(path):
    """The ghz config as a dict, with data-file read (relative to the working directory,
    as ghz reads it, else to the repository root)."""
    config = json.loads(pathlib.Path(path).read_text())
    if "data" in config:
        data = config["data"]
    elif "data-file" in config:
        data_path = pathlib.Path(config["data-file"])
        if not data_path.exists() and not data_path.is_absolute():
            data_path = ROOT / data_path
        data = json.loads(data_path.read_text())
    else:
        raise WorkloadError(f"{path}: neither data nor data-file")
    config["data"] = data if isinstance(data, list) else [data]
    return config


def stream_requests(config, exact_tokens=False):
    """The SingleGenerationRequest messages of the config, in ghz's round-robin order.

    exact_tokens: every request generates exactly max_new_tokens (min_new_tokens set to
    it, stop sequences and time limits dropped), so that two servers do the same work."""
    pb = stubs.load()[0]
    method = config.get("call", "").replace("/", ".").rsplit(".", 1)[-1]
    out = []
    for message in config["data"]:
        if method == "GenerateStream":
            out.append(json_format.ParseDict(message, pb.SingleGenerationRequest()))
        elif method == "Generate":
            batch = json_format.ParseDict(message, pb.BatchedGenerationRequest())
            for request in batch.requests:
                single = pb.SingleGenerationRequest(model_id=batch.model_id, request=request,
                                                    params=batch.params)
                if batch.HasField("prefix_id"):
                    single.prefix_id = batch.prefix_id
                if batch.HasField("adapter_id"):
                    single.adapter_id = batch.adapter_id
                out.append(single)
        else:
            raise WorkloadError(
                f"call {config.get('call')!r}: loadgen times token streams of Generate or "
                "GenerateStream; use ghz for other calls")
    if exact_tokens:
        for request in out:
            stopping = request.params.stopping
            if stopping.max_new_tokens == 0:
                raise WorkloadError("exact tokens need max_new_tokens in every request")
            stopping.min_new_tokens = stopping.max_new_tokens
            del stopping.stop_sequences[:]
            stopping.time_limit_millis = 0
    return out
