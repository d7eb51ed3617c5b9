"""ORM models, one table per module. Importing this package registers every table."""

from models.alert import Alert, AlertMatch
from models.base import Base
from models.booking import Booking
from models.event import ChannelRevocation, ChannelSeq, Event
from models.idempotency_key import IdempotencyKey
from models.login_attempt import LoginAttempt
from models.message import Message
from models.notification import Notification
from models.refresh_token import RefreshToken
from models.review import Review
from models.ride import Ride
from models.ride_place import RidePlace
from models.ride_reminder import RideReminder
from models.session_revocation import SessionRevocation
from models.user import User

__all__ = [
    "Alert",
    "AlertMatch",
    "Base",
    "Booking",
    "ChannelRevocation",
    "ChannelSeq",
    "Event",
    "IdempotencyKey",
    "LoginAttempt",
    "Message",
    "Notification",
    "RefreshToken",
    "Review",
    "Ride",
    "RidePlace",
    "RideReminder",
    "SessionRevocation",
    "User",
]
