"""Drivly Commerce's nested schemas (Account, Consumer, Lead, Address, ...) in Marshmallow.

A site may send a Commerce ``Account`` object with a Web Event (PROPS
``account``); ``load`` checks it exactly as ``commerce-webevents.openapi.yaml``
defines it, and ``dump`` gives the JSON we send. Wherever the spec says
``oneOf: [string, $ref X]`` (a related object or its id), :class:`IdOr`
accepts either.

The spec's own examples break its phone-number pattern (``555-0199`` has
seven digits; the pattern needs ten). We follow the pattern, not the examples.
Personal values never appear in error messages: the messages name the rule,
not the value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_dump, validate

PHONE_PATTERN = r"^\+?1?[- ]?\(?([0-9]{3})\)?[- ]?([0-9]{3})-?([0-9]{4})$"

PERSONAL_FIELDS: tuple[str, ...] = (
    "ssn",
    "birthDate",
    "email",
    "emails",
    "primaryEmail",
    "phoneNumber",
    "phoneNumbers",
    "primaryPhoneNumber",
    "firstName",
    "lastName",
    "line1",
    "line2",
    "zip",
)


def _phone(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Regexp(PHONE_PATTERN, error="must be a 10-digit phone number"), **kwargs)


def _boolean() -> fields.Boolean:
    """A JSON true or false; the strings "yes" and "1" are not booleans in the spec."""
    return fields.Boolean(truthy={True}, falsy={False})


def _email(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Email(error="must be an email address"), **kwargs)


class DateText(fields.String):
    """A ``format: date`` string (YYYY-MM-DD), kept as a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            raise ValidationError("must be a date as YYYY-MM-DD") from None
        if len(text) != 10:
            raise ValidationError("must be a date as YYYY-MM-DD")
        return text


class IdOr(fields.Field):
    """The spec's ``oneOf: [string, X]``: the id of a related object, or the object itself."""

    def __init__(self, schema: type[Schema], **kwargs: Any):
        super().__init__(**kwargs)
        self._schema_class = schema

    def _nested(self) -> Schema:
        return self._schema_class()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | dict[str, Any]:
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return self._nested().load(value)
        raise ValidationError(f"must be an id (string) or a {self._schema_class.__name__.removesuffix('Schema')} object")

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | dict[str, Any] | None:
        if value is None or isinstance(value, str):
            return value
        return self._nested().dump(value)


class CommerceSchema(Schema):
    """Base: absent optional fields are left out of what we send, never sent as null."""

    @post_dump
    def _drop_absent(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value is not None}


class StateSchema(CommerceSchema):
    code = fields.String(required=True)


class CitySchema(CommerceSchema):
    """``City``; Address.city's inline object has the same shape, so it serves for both."""

    state = IdOr(StateSchema, required=True)
    name = fields.String(required=True)


class AddressSchema(CommerceSchema):
    id = fields.String(required=True)
    city = fields.Nested(CitySchema, required=True)
    zip = fields.String(required=True)
    line1 = fields.String(required=True)
    line2 = fields.String()


class AgentSchema(CommerceSchema):
    id = fields.String(required=True)
    prompt = fields.String()
    model = fields.String(required=True)
    functions = fields.List(fields.String())


class CreditBandSchema(CommerceSchema):
    id = fields.String(required=True)
    minimumCreditScore = fields.Float()
    maximumCreditScore = fields.Float()
    name = fields.String(required=True)
    isUnknown = _boolean()
    isNS = _boolean()
    isPrime = _boolean()


class TemplateSchema(CommerceSchema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    messageText = fields.String(required=True)
    subject = fields.String()


class VehicleSpecSchema(CommerceSchema):
    id = fields.String(required=True)
    model = fields.String(required=True)
    make = fields.String(required=True)
    squishVin = fields.String(validate=validate.Length(equal=10))
    year = fields.Integer(strict=True, required=True)
    engine = fields.String(required=True)
    drivetrain = fields.String(required=True)
    bodyStyle = fields.String(required=True)
    transmission = fields.String(required=True)
    trim = fields.String()
    exteriorColors = fields.List(fields.String())
    interiorColors = fields.List(fields.String())


class VehicleSchema(CommerceSchema):
    vin = fields.String(required=True)
    seatCount = fields.Integer(strict=True, validate=validate.Range(min=0))
    doorCount = fields.Integer(strict=True, validate=validate.Range(min=0))
    interiorColor = fields.String()
    exteriorColor = fields.String()
    year = fields.Integer(strict=True, required=True)
    make = fields.String(required=True)
    trim = fields.String()
    transmission = fields.String(required=True)
    engine = fields.String(required=True)
    spec = IdOr(VehicleSpecSchema)
    drivetrain = fields.String(required=True)
    model = fields.String(required=True)
    bodyStyle = fields.String(required=True)


class SalesRepSchema(CommerceSchema):
    id = fields.String(required=True)
    agent = IdOr(AgentSchema)
    address = IdOr(AddressSchema)
    primaryPhoneNumber = _phone()
    primaryEmail = _email()
    lastName = fields.String(required=True)
    firstName = fields.String(required=True)
    emails = fields.List(_email())
    phoneNumbers = fields.List(_phone())
    roles = fields.List(fields.String())
    creditBands = fields.List(IdOr(CreditBandSchema))
    templates = fields.List(IdOr(TemplateSchema))
    isAcceptingNewLeads = _boolean()


class ConsumerSchema(CommerceSchema):
    id = fields.String(required=True)
    addresses = fields.List(IdOr(AddressSchema))
    phoneNumbers = fields.List(_phone())
    birthDate = DateText(required=True)
    email = _email()
    phoneNumber = _phone(required=True)
    ssn = fields.String()
    lastName = fields.String(required=True)
    firstName = fields.String(required=True)


class LeadSchema(CommerceSchema):
    id = fields.String(required=True)
    salesRep = IdOr(SalesRepSchema)
    consumer = IdOr(ConsumerSchema)
    phoneNumber = _phone(required=True)
    email = _email(required=True)
    favorites = fields.List(IdOr(VehicleSchema))
    acceptsGeneratedMessages = _boolean()


class AccountSchema(CommerceSchema):
    id = fields.String(required=True)
    consumer = IdOr(ConsumerSchema)
    lead = IdOr(LeadSchema)
    anonymousIds = fields.List(fields.String())
