"""Entities: the keys other teams look features up by."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A shopper (pseudonymous id from the behaviour export).",
    tags={"owner": "recsys-data-platform", "domain": "customers"},
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A catalog item.",
    tags={"owner": "recsys-data-platform", "domain": "catalog"},
)
