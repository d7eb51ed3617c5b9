"""ORM models, one table per module. Importing this package registers every table."""

from models.base import Base
from models.refresh_token import RefreshToken
from models.user import User

__all__ = ["Base", "RefreshToken", "User"]
