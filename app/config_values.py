"""Plain values that settings and the domain share; imports nothing from app/.

:mod:`app.config` validates settings with these, and the domain reads them
from here, so the arrow runs from the domain to the configuration only.

URI schemes a redirect may never use are the browser's and the OS's own.
RFC 8252 §7.1 lets a native app receive its redirect on a private-use scheme
it claims. The schemes below are claimed by a browser or by the OS itself, so
a "redirect" to them hands the URL to a web page or to a handler that acts
on it. Schemes are compared in lower case (RFC 3986 §3.1).
"""

from __future__ import annotations

#: The protected MCP endpoint; its URL is the RFC 8707 resource indicator.
MCP_PATH = "/mcp"
#: Loopback host names, as ``urlsplit().hostname`` gives them (RFC 8252 §7.3).
#: Redirect URIs must use exactly these; an ``http`` issuer may also use any
#: other loopback address (``config_uris.is_loopback_host``), since only we use it.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Schemes that leave the device; any other registered scheme is private-use.
WEB_SCHEMES = ("http", "https")

#: Schemes that open a URL in one particular web browser, whatever the
#: default: an "app" redirect to them is a web redirect to any site. Edge's
#: ``microsoft-edge:https://...`` on Windows and iOS, Safari's
#: ``x-safari-https://`` (iOS 17), Chrome's ``googlechrome(s)://`` on iOS,
#: ``firefox://open-url?url=`` (and Firefox Focus/Klar's), Opera's, Brave's,
#: DuckDuckGo's, Yandex's and UC Browser's.
BROWSER_LAUNCHER_SCHEMES = frozenset(
    {
        "microsoft-edge", "microsoft-edge-holographic", "microsoft-edge-http",
        "microsoft-edge-https", "x-safari-http", "x-safari-https",
        "googlechrome", "googlechromes", "googlechrome-x-callback",
        "firefox", "firefox-focus", "firefox-klar", "opera", "opera-http",
        "opera-https", "touch-http", "touch-https", "brave", "x-web-search",
        "ddgquicklink", "yandexbrowser-open-url", "ucbrowser", "dolphin",
    }
)  # fmt: skip
#: OS handlers that install, run or fetch what the URL names, behind known
#: exploits: Windows search (``search:``/``search-ms:`` to a remote share),
#: compiled-help and MHTML handlers (``its:``, ``ms-its:``, ``mk:``,
#: ``mhtml:``, ``hcp:``), the shell, Java Web Start, and Apple's App Store
#: and over-the-air install handlers (``itms-services:``), settings and
#: Shortcuts, Office and Teams handlers outside the ``ms-`` namespace
#: (``onenote:https://...`` opens a web document), remote desktop and help.
#: Every ``ms-`` scheme is refused too (:data:`REFUSED_PREFIXES`).
OS_HANDLER_SCHEMES = frozenset(
    {
        "search", "search-ms", "its", "mk", "mhtml", "hcp", "res", "shell",
        "jnlp", "jnlps", "itms", "itmss", "itms-apps", "itms-appss",
        "itms-services", "itms-books", "prefs", "app-prefs",
        "x-apple.systempreferences", "shortcuts", "onenote", "msteams",
        "teams", "skype", "rdp", "help",
    }
)  # fmt: skip
#: Scheme namespaces that belong to an OS vendor: ``ms-`` is Windows' and
#: Office's (``ms-appinstaller``, ``ms-msdt``, ``ms-officecmd``, ``ms-word``,
#: ``ms-excel``, ``ms-settings``, ``ms-cxh`` ...), dozens of handlers and none
#: an application's redirect; the Edge launchers vary their suffix.
REFUSED_PREFIXES = ("ms-", "microsoft-edge")
#: Schemes a browser or the OS acts on itself, so never a native app's
#: private-use redirect (RFC 8252 §7.1): script and inline content,
#: local files and browser internals, other protocols and handlers, Android
#: intents, the retired OOB URN, and ``localhost:`` (a loopback URI missing
#: its ``http://``). Compared in lower case (RFC 3986 §3.1).
REFUSED_REDIRECT_SCHEMES = frozenset(
    {
        "javascript", "vbscript", "livescript", "data", "blob", "filesystem",
        "file", "about", "view-source", "chrome", "chrome-extension",
        "chrome-untrusted", "edge", "moz-extension", "resource", "jar", "read",
        "ftp", "ftps", "sftp", "ws", "wss", "gopher", "telnet", "ssh", "ldap",
        "ldaps", "smb", "afp", "nfs",
        "mailto", "tel", "sms", "smsto", "mms", "callto", "facetime",
        "facetime-audio", "sip", "sips",
        "intent", "android-app", "market", "urn", "localhost",
    }
    | BROWSER_LAUNCHER_SCHEMES
    | OS_HANDLER_SCHEMES
)  # fmt: skip


def scheme_refused(scheme: str) -> bool:
    """Whether a scheme is one a browser or the OS acts on (never accepted)."""
    scheme = scheme.lower()
    return scheme in REFUSED_REDIRECT_SCHEMES or scheme.startswith(REFUSED_PREFIXES)
