"""The floors the inference benchmark compares against, served by gunicorn with the same
settings as the product (gunicorn.conf.py):

    floor (a)  bench.floors:constant   a bare Flask view returning a constant JSON body
    floor (b)  bench.floors:hgetall    a bare Flask view that parses the same request, does one
                                       Redis HGETALL and returns it as JSON
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, jsonify, request

PATH = "/api/v1/features/inference"

constant = Flask("floor_constant")


@constant.post(PATH)
def constant_view():
    return Response(b'{"success": true}', mimetype="application/json")


hgetall = Flask("floor_hgetall")
_client: redis.Redis | None = None


@hgetall.post(PATH)
def hgetall_view():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    body = request.get_json()
    stored = _client.hgetall(f"{body['feature_type']}:{body['entity_id']}")
    return jsonify({key.decode(): value.decode() for key, value in stored.items()})
