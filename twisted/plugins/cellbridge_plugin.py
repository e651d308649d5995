# No __init__.py here or in twisted/: either would hide this plugin or shadow Twisted itself.
# ServiceMaker imports bridge.tap only when `twistd cellbridge` runs, so `twistd --help` stays
# cheap and cannot be broken by an import error in cellbridge.
from twisted.application.service import ServiceMaker

cellbridge = ServiceMaker("cellbridge", "bridge.tap",
                          "Bridge local ports through a Quectel GSM module", "cellbridge")
