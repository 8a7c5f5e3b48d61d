"""The side-by-side benchmark of pyaccess: ``make bench`` runs it whole, ``make test`` with tiny sizes."""
