"""ORM models, one table per module. Importing this package registers every table."""

from models.base import Base
from models.event import ChannelRevocation, ChannelSeq, Event
from models.refresh_token import RefreshToken
from models.user import User

__all__ = ["Base", "ChannelRevocation", "ChannelSeq", "Event", "RefreshToken", "User"]
