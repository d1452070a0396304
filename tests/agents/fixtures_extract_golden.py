"""Human-labelled extraction checks for the shared corpus: what must and must not be extracted.

The corpus pages come from trafilatura's `tests/cache`; these snippets are the assertions its
`tests/realworld_tests.py` (Apache-2.0) makes on the same pages in plain-text output, copied as
data. Reader comments, which trafilatura's tests expect in the text, are moved to a third
list: we extract without comments, so they must stay out. The checks are our yardstick for
choosing trafilatura settings and a floor the extraction test holds us to.

Keyed by corpus file name without `.html.gz`. Run the settings comparison behind the
defaults in `agents.extract.ExtractConfig` (one pass per mode, CPU time):

    .venv/bin/python -m tests.agents.fixtures_extract_golden
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

# name -> (article text that must be kept, boilerplate that must not be,
#          reader comments, which we exclude from the article text)
GOLDEN: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "die-partei.net.luebeck": (
        ("Die GEMA dreht völlig am Zeiger!",),
        ("Impressum",),
        (),
    ),
    "bmjv.de.konsum": (
        ("Anbieter von Fernwärme haben innerhalb ihres Leitungsnetzes ein Monopol",),
        ("Impressum",),
        (),
    ),
    "denkanstoos.com.2012": (
        ("Two or three 10-15 min", "What type? Etc. (30 mins)"),
        ("Dieser Eintrag wurde veröffentlicht", "Mit anderen Teillen"),
        (),
    ),
    "ebrosia.de.zinfandel": (
        ("Das Bukett präsentiert sich", "Besonders gut passt er zu asiatischen Gerichten"),
        ("Kunden kauften auch", "Gutschein sichern"),
        (),
    ),
    "landwirt.com.sensortechnik": (
        ("Überwachung der somatischen Zellen", "tragbaren Ultraschall-Geräten", "Kotkonsistenz"),
        ("Anzeigentarife", "Aktuelle Berichte aus dieser Kategorie"),
        (),
    ),
    "rs-ingenieure.de.tragwerksplanung": (
        ("Wir bearbeiten alle Leistungsbilder",),
        ("Brückenbau",),
        (),
    ),
    "shingon-reiki.de.schamanismus": (
        ("Heut geht es", "Ich komme dann zu dir vor Ort."),
        ("Catch Evolution", "und gekennzeichnet mit"),
        (),
    ),
    "love-hina.ch.0409": (
        ("Kapitel 121 ist",),
        ("Besucher online", "Kommentare schreiben"),
        (),
    ),
    "cdu-fraktion-erfurt.de.waldorfschule": (
        ("der steigenden Nachfrage gerecht zu werden.",),
        ("Zurück zur Übersicht", "Erhöhung für Zoo-Eintritt"),
        (),
    ),
    "de.creativecommons.org.endlich": (
        ("das letzte Wort sein kann.",),
        ("Ähnliche Beiträge",),
        (),
    ),
    "piratenpartei-mv.de.grundeinkommen": (
        (
            "Unter diesem Motto findet am 14. September",
            "Volksinitiative Schweiz zum Grundeinkommen.",
        ),
        ("getaggt mit:", "Was denkst du?"),
        (),
    ),
    "spektrum.de.engelbart": (
        ("Zweitens wird der Genderstern", "alldem leider – nichts."),
        (),
        (),
    ),
    "wehranlage-horka.de.887": (
        ("In eine andere Zeit", "Während Sie über den Markt schlendern"),
        ("Infos zum Verein", "nach oben", "Datenschutzerklärung"),
        (),
    ),
    "demokratiewebstatt.at.luft": (
        ("Millionen Menschen fahren jeden Tag",),
        ("Clipdealer", "Teste dein Wissen", "Thema: Fußball"),
        (),
    ),
    "simplyscience.ch.erdoel": (
        ("Erdöl bildet nach Millionen", "Warum wird das Erdöl knapp?"),
        ("Die Natur ist aus chemischen Elementen aufgebaut",),
        (),
    ),
    "rnz.de.witzel": (
        ("Für einen Roman", "Auszeichnung der Branche."),
        (),
        (),
    ),
    "buchperlen.wordpress.com": (
        ("Dann sollten Sie erst recht", "als saure Gürkchen entlarvte Ex-Boyfriends."),
        ("Ähnliche Beiträge",),
        (),
    ),
    "toralin.de.schmierfett": (
        (
            "künftig das XADO-Schutzfett verwenden.",
            "bis zu 50% Verschleiß.",
            "Die Lebensdauer von Bauteilen erhöht sich beträchtlich.",
        ),
        ("Newsletter", "Sie könnten auch an folgenden Artikeln interessiert sein"),
        (),
    ),
    "fairkom.eu.about": (
        (
            "ein gemeinwohlorientiertes Partnerschaftsnetzwerk",
            "Stimmberechtigung bei der Generalversammlung.",
        ),
        ("support@fairkom.eu",),
        (),
    ),
    "futurezone.at.lyft": (
        ("Einige Kunden des Fahrdienst-Vermittler Lyft", "zeitweise rund vier Prozent."),
        ("Allgemeine Nutzungsbedingungen", "Waymo bittet Autohersteller um Geld"),
        (),
    ),
    "hundeverein-kreisunna.de": (
        ("Beate und Norbert Olschewski", "ein Familienmitglied und unser Freund."),
        ("zurück zur Startseite",),
        (),
    ),
    "viehbacher.com.steuerrecht": (
        (
            "und wirtschaftlich orientierte Privatpersonen",
            "rund um die Uhr.",
            "Mensch im Mittelpunkt.",
        ),
        ("Was sind Cookies?",),
        (),
    ),
    "jovelstefan.de.gefallt": (
        ("Manchmal überrascht einen", "kein Meisterwerk war!"),
        ("Pingback von", "Kommentare geschlossen"),
        (),
    ),
    "stuttgart.de": (
        ("Das Bohnenviertel entstand", "sich herrlich entspannen."),
        ("Nützliche Links", "Mehr zum Thema"),
        (),
    ),
    "kulinariaathome.com.mandelpl_tzchen": (
        (
            "zu einem glatten Teig verarbeiten.",
            "goldbraun sind.",
            "200 g Zucker",
            "Ein Backblech mit Backpapier auslegen.",
        ),
        ("Sei der Erste", "Gefällt mir", "Trotz sorgfältiger inhaltlicher Kontrolle"),
        (),
    ),
    "kulu-media.com.meta-outage": (
        ("Many users reported being automatically logged out of their accounts",),
        ("Artemis", "splashdown"),
        (),
    ),
    "schleifen.ucoz.de.briefe": (
        ("Es war gesagt,", "Symbol auf dem Finger haben"),
        ("Aufrufe:",),
        (),
    ),
    "austria.info.radfahren": (
        ("Salzburg liebt seine Radfahrer.", "Puls einsaugen zu lassen."),
        ("Das könnte Sie auch interessieren ...", "So macht Radfahren sonst noch Spaß"),
        (),
    ),
    "modepilot.de.duschkopf": (
        ("Allerdings sieht es wie ein Dildo aus,", "gibt Bescheid, ne?"),
        ("Ähnliche Beiträge", "Deine E-Mail (bleibt natürlich unter uns)"),
        (),
    ),
    "otto.de.twoforfashion": (
        ("Ob rund oder kastenförmig, ob dezent oder auffällig", "XX, Die Redaktion"),
        (" Kommentieren", "Dienstag, 4. Juni 2019"),
        (),
    ),
    "iloveponysmag.com.barbour": (
        (
            "Eine meiner besten Entscheidungen bisher:",
            "Verlassenes Gewächshaus meets versteckter Deich",
            "Der Hundestrand in Stein an der Ostsee",
        ),
        ("Tags: Barbour,", "Hinterlasse einen Kommentar"),
        ("Bitte (noch) mehr Bilder von Helle",),
    ),
    "moritz-meyer.net.vreni": (
        (
            "Das ist alles nicht gekennzeichnet, wie soll ich wissen",
            "Instagramshops machen es Abmahnanwälten leicht",
        ),
        (
            "Diese Geschichte teilen",
            "Ähnliche Beiträge ",
            "Diese Website verwendet Akismet, um Spam zu reduzieren.",
        ),
        (
            "Ich bin der Ansicht, abwarten und Tee trinken.",
            "Danke für dein Feedback. Auch zum Look meiner Seite.",
        ),
    ),
    "womencantalksports.com.top10": (
        ("Keep Talking Sports!", "3.Charlotte Jones Anderson"),
        (
            "Category: Blog Popular",
            "Copyright Women Can Talk Sports.",
            "Submit your sports question below",
        ),
        (),
    ),
    "plentylife.blogspot.pamela-reif": (
        (
            "Schönheit kommt für Pamela von Innen und Außen",
            "Die Workout Übungen kannte ich bereits",
        ),
        (
            "Links zu diesem Post",
            "mehr über mich ♥",
            "Bitte beachte auch die Datenschutzerklärung von Google.",
        ),
        ("Great post, I like your blog",),
    ),
    "luxuryhaven.co.hyatt": (
        (
            "Grounded in sustainable architecture and refined Vietnamese craftsmanship,",
            "and Carmelo Resort",
            "Dining and Drinking",
        ),
        ("Food Advertising by", "A lovely note makes a beautiful day!"),
        ("OMG what a beautiful place to stay! ",),
    ),
    "luxuriousmagazine.com.polo": (
        (
            "Argentina, the birthplace of polo.",
            "Simon Wittenberg travels to the Eternal City in Italy",
        ),
        ("Luxury and lifestyle articles", "Pinterest"),
        (),
    ),
    "chip.de.tests": (
        ("Werkzeug für Heimwerker und Baumarkt-Artikel",),
        ("Newsletter",),
        (),
    ),
    "gruen-digital.de.jahrestagung": (
        ("Prof. Dr. Caja Thimm", "zur Anmeldung."),
        ("Next post", "Aus den Ländern"),
        (),
    ),
    "rechtambild.de.kochbuch": (
        ("Leitsätze des Gerichts",),
        ("twittern", "Ähnliche Beiträge", "d.toelle[at]rechtambild.de"),
        (),
    ),
    "internet-law.de.pseudonymen": (
        ("Wann Blogs einer Impressumspflicht unterliegen,",),
        ("Über mich", "Gesetzes- und Rechtsprechungszitate werden automatisch"),
        ("Mit Verlaub, ich halte das für groben Unsinn.",),
    ),
    "telemedicus.info.rezension": (
        ("Aufbau und Inhalt", "Verlag Dr. Otto Schmidt"),
        ("Handbuch", "Drucken", "Ähnliche Artikel", "Anzeige:"),
        (),
    ),
    "cnet.de.schutz": (
        ("Auch der Verweis auf ehrverletzende Bewertungen",),
        (
            "Fanden Sie diesen Artikel nützlich?",
            "Kommentar hinzufügen",
            "Anja Schmoll-Trautmann",
            "Aktuell",
        ),
        (),
    ),
    "correctiv.org.zusage": (
        (
            "Vorweg: Die beteiligten AfD-Politiker",
            "ist heute Abend um 21 Uhr auch im ZDF-Magazin Frontal",
        ),
        (
            "Alle Artikel zu unseren Recherchen",
            "Wir informieren Sie regelmäßig zum Thema Neue Rechte",
            "Kommentar verfassen",
            "weiterlesen",
        ),
        (),
    ),
    "sueddeutsche.de.flixtrain": (
        (
            "Bahn-Konkurrenten wie Flixbus fürchten durch den geplanten Deutschlandtakt",
            "auch der Bus ein klimafreundliches Verkehrsmittel sei",
        ),
        (
            "05:28 Uhr",
            "ICE im S-Bahn-Takt",
            "Diskussion zu diesem Artikel auf:",
            "Berater-Affäre bringt Bahnchef Lutz in Bedrängnis",
        ),
        (),
    ),
    "adac.de.kindersitze": (
        (
            "in punkto Sicherheit, Bedienung, Ergonomie",
            "Grenzwert der Richtlinie 2014/79/EU",
            "Besonders bei Babyschalen sollte geprüft werden",
        ),
        ("Rund ums Fahrzeug", "Diesel-Umtauschprämien"),
        (),
    ),
    "caktusgroup.com.django": (
        (
            "Was I losing my mind?",
            "being cached after their first access.",
            "Finding a Fix",
            "from django.conf import settings",
        ),
        ("New Call-to-action", "Contact us", "Back to blog", "You might also like:"),
        (),
    ),
    "computerbase.de.htc": (
        ("Vor knapp zwei Wochen", "gibt es in der dazugehörigen Vorstellungs-News."),
        (
            "Themen:",
            "bis Januar 2009 Artikel für ComputerBase verfasst.",
            "Warum Werbebanner?",
            "71 Kommentare",
        ),
        (),
    ),
    "chineselyrics4u.com.zhineng": (
        ("就放心去吧", "Repeat Chorus"),
        ("Older post", "Thank you for your support!"),
        (),
    ),
    "basicthinking.de.tweets": (
        (
            "Frank Thelen, Investor",
            "Female founders must constantly consider",
            "Thema des öffentlichen Interesses",
        ),
        (
            "Nach langjähriger Tätigkeit im Ausland",
            "Mit Absendung des Formulars willige ich",
            "Kommentieren",
        ),
        ("Schaut man ganz genau hin, ist der Habeck-Kommentar",),
    ),
    "meedia.de.freenet": (
        (
            "Welche Werbeeinnahmen erwarten Sie hier langfristig?",
            "wir haben keinerlei Pläne, das zu verändern.",
        ),
        (
            "Nachrichtenüberblick abonnieren",
            "über alle aktuellen Entwicklungen auf dem Laufenden.",
            "Schlagworte",
            "Teilen",
            "Dauerzoff um drohenden UKW-Blackout",
        ),
        ("Mobilcom Debitel has charged me for third party",),
    ),
    "incurvy.de.wellness": (
        (
            "Zeit für Loslassen und Entspannung.",
            "Wie sieht dein Alltag aus?",
            "Erfrischende, abschwellende Augencreme Phyto Contour",
            "Vielen Dank Anja für deine Tipps rund um Beauty",
        ),
        ("Betreiberin von incurvy Plus Size", "Wir verwenden Cookies"),
        (),
    ),
    "dw.com.uncork": (
        ("No grape variety invites as much intrigue", "With just 0.9 hectares"),
        ("Related Subjects", "Audios and videos on the topic"),
        (),
    ),
    "jolie.de.adele": (
        ("Adele feierte ausgelassen mit den Spice Girls", "wie sich Adele weiterentwickelt."),
        ("Sommerzeit ist Urlaubszeit,", "Lade weitere Inhalte"),
        (),
    ),
    "speicherguide.de.schwierige": (
        ("Konflikte mag keiner.", "Gespräche meistern können."),
        ("Weiterführender Link", "Flexible Wege in die", "Storage für den Mittelstand"),
        (),
    ),
    "novalanalove.com.ear-candy": (
        ("Earcuff: Zoeca", "mit längeren Ohrringen (:", "Kreole: Stella Hoops"),
        ("Jetzt heißt es schnell sein:", "Diese Website speichert Cookies", "VON Sina Giebel"),
        (),
    ),
    "franziska-elea.de.vuitton": (
        ("Zuerst dachte ich, ich könnte das", "x Franzi", "Flauschjacke: Bershka"),
        ("Palm Springs Mini (links)", "Diese Website verwendet Akismet", "New York, New York"),
        (),
    ),
    "gofeminin.de.abnehmen": (
        ("Die Psyche spielt eine nicht unerhebliche Rolle", "2. Satt essen bei den Mahlzeiten"),
        (
            "Sportskanone oder Sportmuffel",
            "PINNEN",
            "Bringt die Kilos zum Purzeln!",
            "Crash-Diäten ziehen meist den Jojo-Effekt",
        ),
        (),
    ),
    "brigitte.de.ikigai": (
        (
            "Glücks-Trend Konkurrenz",
            "Praktiziere Dankbarkeit",
            "dein Ikigai schon gefunden?",
            "14,90 Euro.",
        ),
        ("Neu in Liebe", "Erfahre mehr", "Erfahrung mit privater Arbeitsvermittlung?"),
        (),
    ),
    "changelog.blog.zwischenbilanz": (
        (
            "Gibt es weitere Top-Maßnahmen für Multi-Channel?",
            "Vielen Dank für das interessante Interview!",
        ),
        (
            "akzeptiere die Datenschutzbestimmungen",
            "Diese Beiträge solltest du nicht verpassen",
            "Annette Henkel",
        ),
        (),
    ),
    "threatpost.com.android": (
        (
            "These messages include links to the ransomware",
            "using novel techniques to exfiltrate data.",
        ),
        (
            "Share this article:",
            "Write a comment",
            "Notify me when new comments are added.",
            "uses Akismet to reduce spam.",
        ),
        (),
    ),
    "vice.com.amazon": (
        ("Brazil went dark.", "the highest number of deforestation warnings.”"),
        ("Tagged:", "to the VICE newsletter.", "Watch this next"),
        (),
    ),
    "heise.de.lithium": (
        ("Die Ökobilanz von Elektroautos", "Nur die Folie bleibt zurück"),
        ("Forum zum Thema:",),
        (),
    ),
    "theverge.com.ios13": (
        (
            "Normally, video calls tend to",
            "across both the eyes and nose.",
            "Added ARKit explanation and tweet.",
        ),
        ("Singapore’s public health program", "Command Line delivers daily updates"),
        (),
    ),
    "crazy-julia.de.tipps": (
        (
            "in keinem Braut-Beauty-Programm fehlen darf?",
            "nicht nur vor der Hochzeit ein absolutes Muss.",
            "Gesundes, glänzendes Haar",
        ),
        (
            "Neue Wandbilder von Posterlounge",
            "mit meinen Texten und mit meinen Gedanken.",
            "Erforderliche Felder sind mit * markiert.",
        ),
        (),
    ),
    "brandenburg.de.homo-brandenburgensis": (
        (
            "Stilles Rackern, statt lautem Deklamieren.",
            "Watt jibt’s n hier zu lachen?",
            "Das Brandenbuch. Ein Land in Stichworten.",
        ),
        (
            "Bürgerbeteiligung",
            "Anmelden",
            "Foto: Timur",
            "Schlagworte",
            "Zeilenumbrüche und Absätze werden automatisch erzeugt.",
        ),
        (),
    ),
    "skateboardmsm.de.dormhagen": (
        ("Wakebeach 257", "Be there or be square!", "Hier geht’s zur Facebook Veranstaltung"),
        ("More from News", "von Redaktion MSM", "add yours."),
        (),
    ),
    "knowtechie.com.rally": (
        (
            "Rocket Pass 4 will begin at 10:00 a.m. PDT",
            "Holy shit, Mortal Kombat 11",
            "Let us know down below in the comments",
        ),
        (
            "Related Topics",
            "You can keep up with me on Twitter",
            "Hit the track today with Mario Kart Tour",
        ),
        (),
    ),
    "en.wikipedia.org.tsne": (
        ("Given a set of high-dimensional objects", "Herein a heavy-tailed Student t-distribution"),
        ("Categories:", "Conditional random field"),
        (),
    ),
    "mixed.de.vrodo": (
        ("Niedlicher Roboter-Spielkamerad: Anki Cozmo", "Empfehlungen von Dennis:"),
        ("Unterstütze unsere Arbeit", "Deepfake-Hollywood", "Avengers", "Katzenschreck"),
        (),
    ),
    "spreeblick.com.habeck": (
        ("Hunderttausende von jungen Paaren",),
        ("Malte Welding", "YouTube und die Alten", "Autokorrektur"),
        ("wie flatterhaft das Mädl ist? :)",),
    ),
    "majkaswelt.com.fashion": (
        ("Rüschen und Volants.", "ihr jedes Jahr tragen könnt?"),
        ("Das könnte dich auch interessieren", "Catherine Classic Lac 602"),
        (),
    ),
    "erp-news.info.interview": (
        (
            "Einblicke in die Vision zukünftiger Softwaregenerationen.",
            "Frage 4: Welche Rolle spielt Big Data in Bezug auf Assistenz-Systeme und KI?",
            "von The unbelievable Machine Company (*um) zur Verfügung gestellt.",
        ),
        (
            "Matthias Weber ist ERP-Experte mit langjähriger Berufserfahrung.",
            "Die Top 5 digitalen Trends für den Mittelstand",
            ", leading edge,",
        ),
        (),
    ),
    "boingboing.net.millenials": (
        ("Click through for the whole thing.", "The generation we love to dump on"),
        ("GET THE BOING BOING NEWSLETTER",),
        (),
    ),
    "github.blog.spiceland": (
        (
            "Erin Spiceland is a Software Engineer for SpaceX.",
            "make effective plans and goals for the future",
            "looking forward to next?",
            "Research Consultant at Adelard LLP",
        ),
        ("Related posts", "Jeremy Epling", "Missed the main event?", "Privacy"),
        (),
    ),
    "lady50plus.de.sekre": (
        (
            "ist eine echte Luxushandtasche",
            "Insgesamt 160 weibliche „Designerinnen“",
            "in den Bann ziehen!",
        ),
        (
            "Erforderliche Felder sind mit",
            "Benachrichtige mich",
            "Reisen ist meine große Leidenschaft",
            "Styling Tipps für Oktober",
        ),
        ("Sei herzlich gegrüßt", "Ein Mann alleine hätte niemals"),
    ),
    "sonntag-sachsen.de.emanuel": (
        ("Neuer Geschäftsführender Leiter", "nach Leipzig wechseln."),
        ("Mehr zum Thema", "Folgen Sie uns auf Facebook und Twitter", "Aktuelle Ausgabe"),
        (),
    ),
    "psl.eu.luniversite": (
        ("Le décret n°2019-1130 validant", "restructurant à cet effet »."),
        (" utilise des cookies pour", "En savoir plus"),
        (),
    ),
    "chip.de.beef": (
        ("Starke Hitze nur in der Mitte", "ca. 35,7×29,4 cm", "Wir sind im Steak-Himmel!"),
        ("Samsung Galaxy S10 128GB", "Für Links auf dieser Seite"),
        (),
    ),
    "sauvonsluniversite.com.spip": (
        (
            "L’AG Éducation Île-de-France inter-degrés",
            "Grève et mobilisation pour le climat",
            "suivi.reformes.blanquer@gmail.com",
        ),
        ("Sauvons l’Université !", "La semaine de SLU"),
        (),
    ),
    "spiegel.de.albtraum": (
        (
            "Wie konnte es dazu kommen?",
            "Die Geschichte beginnt am 26. Oktober",
            "Es stützt seine Version.",
        ),
        (
            "und Vorteile sichern!",
            "Verschickt",
            "Die digitale Welt der Nachrichten.",
            "Vervielfältigung nur mit Genehmigung",
        ),
        (),
    ),
    "lemire.me.json": (
        ("I use a Skylake processor with GNU GCC 8.3.", "gsoc-2018", "0.091 GB/s"),
        ("Leave a Reply", "Science and Technology links", "Proudly powered by WordPress"),
        ("version 0.2 on vcpkg.",),
    ),
    "zeit.de.zugverkehr": (
        ("36 Stunden.", "Nationale Egoismen", "Deutschland kaum beschleunigt."),
        ("Durchgehende Tickets fehlen", "Bitte melden Sie sich an, um zu kommentieren."),
        ("geprägte Fehlentscheidung.", "horrende Preise für miserablen Service bezahlen?"),
    ),
    "franceculture.fr.idees": (
        (
            "Performativité",
            "Les individus productifs communiquent",
            "de nos espoirs et de nos désirs.",
        ),
        ("A la tribune je monterai", "À découvrir", "Le fil culture"),
        (),
    ),
    "wikimediafoundation.org.turkey": (
        ("as further access is restored.",),
        (
            "Read further in the pursuit of knowledge",
            "Here’s what that means.",
            "Stay up-to-date on our work.",
            "Photo credits",
        ),
        (),
    ),
    "reuters.com.parasite": (
        ("Despite an unknown cast,", "Additional reporting by"),
        ("4 Min Read", "Factbox: Key winners"),
        (),
    ),
    "vancouversun.com.microsoft": (
        ("Microsoft Corp said on Thursday", "It was not immediately clear if"),
        ("I consent to receiving", "turns CO2 into soap", "Reuters files"),
        ("Postmedia is committed",),
    ),
}


MODES = {
    "balanced (default)": {},
    "favor_precision": {"favor_precision": True},
    "favor_recall": {"favor_recall": True},
    "fast": {"fast": True},
    "recall + fast": {"favor_recall": True, "fast": True},
    "no tables": {"include_tables": False},
    "deduplicate": {"deduplicate": True},
}


def compare_modes() -> None:
    """Print kept / kept-out counts and CPU time for each trafilatura mode."""
    from agents.extract import ExtractConfig, Extracted, extract
    from streams.sources import iter_pages
    from tests.agents.fixtures_extract import page_name
    from tests.conftest import CORPUS

    logging.disable(logging.CRITICAL)  # trafilatura logs every page it finds little in
    pages = [p for p in iter_pages([CORPUS]) if not hasattr(p, "failure")]
    for page in pages:  # warm-up: imports, lazy tables
        extract(page)
    n_keep = sum(len(g[0]) for g in GOLDEN.values())
    n_out = sum(len(g[1]) + len(g[2]) for g in GOLDEN.values())
    base = None
    print(f"{'mode':20} {'kept':>9} {'kept out':>9} {'ms/page':>8} {'ratio':>6}")
    for mode, options in MODES.items():
        cfg = replace(ExtractConfig(), **options)
        texts, start = {}, time.process_time()
        for page in pages:
            result = extract(page, cfg)
            texts[page_name(page)] = result.text if isinstance(result, Extracted) else ""
        seconds = time.process_time() - start
        base = base or seconds
        kept = sum(s in texts[n] for n, g in GOLDEN.items() for s in g[0])
        out = sum(s not in texts[n] for n, g in GOLDEN.items() for s in g[1] + g[2])
        print(
            f"{mode:20} {kept:>4}/{n_keep} {out:>4}/{n_out} "
            f"{1000 * seconds / len(pages):>8.1f} {seconds / base:>6.2f}"
        )


if __name__ == "__main__":
    compare_modes()
